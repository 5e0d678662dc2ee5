"""Unknown query parameters on list endpoints are a 400 naming them: `?stauts=failed` or
`?limt=5` used to be ignored, so a client got every job, or 20 of them, and believed the filter worked."""

from __future__ import annotations

import difflib

from fastapi import Depends, Request

from api.errors import APIError


def declared_query_names(dependant) -> set[str]:
    """The query parameters a route and its dependencies declare (their aliases, as a client writes them)."""
    names = {field.alias for field in dependant.query_params}
    for sub in dependant.dependencies:
        names |= declared_query_names(sub)
    return names


def closest(name: str, known) -> str | None:
    matches = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _reject_unknown(request: Request, patterns: tuple[str, ...]) -> None:
    route = request.scope.get("route")
    if route is None or not hasattr(route, "dependant"):
        return
    known = declared_query_names(route.dependant)
    unknown = [k for k in dict.fromkeys(request.query_params.keys()) if k not in known and not k.startswith(patterns)]
    if not unknown:
        return
    hints = [f" (did you mean {hint!r}?)" if (hint := closest(name, known)) else "" for name in unknown]
    listed = ", ".join(f"{name!r}{hint}" for name, hint in zip(unknown, hints, strict=True))
    accepted = ", ".join(sorted(known | {f"{p}..." for p in patterns})) or "none"
    raise APIError(
        400,
        f"unknown query parameter{'s' if len(unknown) > 1 else ''} {listed}; this endpoint accepts: {accepted}.",
        code="unknown_parameter",
        param=unknown[0],
    )


def known_query_only(*patterns: str):
    """A route dependency: 400 for query parameters the route does not declare. `patterns` are prefixes the route
    reads from the request itself (the OpenAI job list's `metadata[key]=value`)."""

    async def check(request: Request) -> None:  # async: no threadpool hop for a check that never blocks
        _reject_unknown(request, tuple(patterns))

    return Depends(check)


KNOWN_QUERY = known_query_only()
