"""General English/technical text that is on every machine of this kind, offline: the pretraining corpus of the
BPE base model (`base.py`) and the source of the man-page instruction task (`manpages.py`).

Sources (each capped, so that no single one dominates the mix):

- Python's standard library: the `.py` sources (code, comments and docstrings), tests and site-packages excluded;
- English man pages, sections 1, 5, 7 and 8 (`/usr/share/man/manN/*.gz`), roff markup stripped;
- `/usr/share/doc`: plain-text files (README, NEWS, *.txt, *.md, copyright), gzip ones decompressed;
- `/usr/share/common-licenses` and the package descriptions of `/var/lib/dpkg/status`.

Deterministic for a given machine image: files are read in sorted order, then documents are shuffled with a
seeded generator. A document is held out when a hash of its name falls in a fixed bucket (`is_heldout`); the same
rule decides which commands' man pages the instruction task evaluates on, so the base model never saw them.
"""

from __future__ import annotations

import gzip
import random
import re
import sysconfig
import zlib
from dataclasses import dataclass
from pathlib import Path

MAN_ROOT = Path("/usr/share/man")
DOC_ROOT = Path("/usr/share/doc")
LICENSES_ROOT = Path("/usr/share/common-licenses")
DPKG_STATUS = Path("/var/lib/dpkg/status")
MAN_SECTIONS = ("man1", "man5", "man7", "man8")

# Characters per source (before the overall cap); about 10 M characters in all, ~3 M BPE tokens at 8k.
SOURCE_CAPS = {"stdlib": 4_000_000, "man": 3_500_000, "doc": 2_000_000, "licenses": 300_000, "dpkg": 800_000}
MAX_DOC_CHARS = 40_000  # one huge file (a changelog, a generated module) must not become a fifth of a source
HELDOUT_BUCKETS = 40  # 1 in 40 documents (2.5%) is held out


@dataclass(frozen=True)
class Document:
    source: str
    name: str  # stable identifier: "man:ls", "stdlib:json/decoder.py", ...
    text: str


def is_heldout(name: str) -> bool:
    """Held-out documents: a fixed hash bucket of the name (crc32, so it is stable across Python runs)."""
    return zlib.crc32(name.encode()) % HELDOUT_BUCKETS == 0


# ---------------------------------------------------------------------------------------------------- roff


_ESCAPES = [
    (re.compile(r"\\f(\(..|\[[^\]]*\]|.)"), ""),  # font changes \fB \fR \f(CW \f[I]
    (re.compile(r"\\\*(\(..|\[[^\]]*\]|.)"), ""),  # string registers
    (re.compile(r"\\\((em|en)"), "-"),
    (re.compile(r"\\\(aq"), "'"),
    (re.compile(r"\\\((lq|rq|dq)"), '"'),
    (re.compile(r"\\\(..|\\\[[^\]]*\]"), ""),  # other special characters
    (re.compile(r"\\[&,/|^)%]"), ""),  # zero-width and italic-correction escapes
    (re.compile(r"\\s[+-]?\d"), ""),  # point-size changes
    (re.compile(r"\\-"), "-"),
    (re.compile(r"\\e"), "\\\\"),
    (re.compile(r"\\ "), " "),
    (re.compile(r"\\(.)"), r"\1"),
]


def roff_inline(text: str) -> str:
    """Text of one roff line with its inline escapes removed (fonts, special characters, `\\-`)."""
    for pattern, replacement in _ESCAPES:
        text = pattern.sub(replacement, text)
    return text


def _macro_args(rest: str) -> str:
    # .BR "a b" c -> a b c: quoted arguments keep their spaces; alternating-font macros join without spaces in roff,
    # but a readable join is what we want for text.
    parts = re.findall(r'"([^"]*)"|(\S+)', rest)
    return " ".join(a or b for a, b in parts)


def roff_lines(source: str) -> list[tuple[str, str]]:
    """The man page as (kind, text) lines: kind "heading" (.SH/.SS), "para" (a paragraph break: .PP/.TP/.IP...),
    "tag" (the line after .TP, or the argument of .IP) or "text". Comments and unknown macros are dropped."""
    out: list[tuple[str, str]] = []
    after_tp = False
    for raw in source.splitlines():
        if raw.startswith(('.\\"', "'\\\"", '\\"')) or raw.strip() in (".", "'"):
            continue
        if raw.startswith((".", "'")):
            macro, _, rest = raw[1:].strip().partition(" ")
            if macro in ("SH", "SS"):
                out.append(("heading", roff_inline(_macro_args(rest)).strip()))
            elif macro in ("TP", "PP", "LP", "P", "HP", "sp", "br"):
                out.append(("para", ""))
                after_tp = macro == "TP"
                continue
            elif macro == "IP":
                out.append(("para", ""))
                if rest.strip():
                    out.append(("tag", roff_inline(_macro_args(rest)).strip()))
            elif macro in ("B", "I", "BR", "RB", "IR", "RI", "BI", "IB", "SM", "SB", "UR", "MT", "Nm", "Ar", "Fl"):
                text = roff_inline(_macro_args(rest)).strip()
                if text:
                    out.append(("tag" if after_tp else "text", text))
            after_tp = False
            continue
        text = roff_inline(raw).strip()
        if text:
            out.append(("tag" if after_tp else "text", text))
        after_tp = False
    return out


def roff_to_text(source: str) -> str:
    """Plain text of a man page: headings on their own lines, paragraphs joined, blank lines between them."""
    chunks: list[str] = []
    current: list[str] = []
    for kind, text in roff_lines(source):
        if kind in ("heading", "para", "tag") and current:
            chunks.append(" ".join(current))
            current = []
        if kind == "heading":
            chunks.append(text.upper())
        elif kind in ("tag", "text"):
            current.append(text)
    if current:
        chunks.append(" ".join(current))
    return "\n\n".join(chunk for chunk in chunks if chunk)


# ---------------------------------------------------------------------------------------------------- sources


def _read_text(path: Path) -> str | None:
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error):
        return None
    if b"\0" in data[:4096]:
        return None  # binary
    text = data.decode("utf-8", errors="replace")
    return text[:MAX_DOC_CHARS] if text.strip() else None


def man_page_paths(sections=MAN_SECTIONS) -> list[Path]:
    """English man pages (the top-level sections; translations live in language folders), sorted."""
    paths = []
    for section in sections:
        folder = MAN_ROOT / section
        if folder.is_dir():
            paths += sorted(
                p for p in folder.iterdir() if p.name.endswith(".gz") and p.is_file() and not p.is_symlink()
            )
    return paths


def man_name(path: Path) -> str:
    """ "ls" for /usr/share/man/man1/ls.1.gz."""
    return path.name[: -len(".gz")].rsplit(".", 1)[0]


def _man_document(path: Path) -> Document | None:
    source = _read_text(path)
    # .so pages are one-line redirections to another page.
    if not source or source.lstrip().startswith(".so "):
        return None
    text = roff_to_text(source)
    return Document("man", f"man:{man_name(path)}", text) if len(text) > 200 else None


def _file_document(source: str, root: Path):
    def read(path: Path) -> Document | None:
        text = _read_text(path)
        return Document(source, f"{source}:{path.relative_to(root).as_posix()}", text) if text else None

    return read


def _stdlib_paths() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = ("test", "tests", "site-packages", "idlelib", "lib2to3")
    return [p for p in sorted(root.rglob("*.py")) if not any(part in skip for part in p.relative_to(root).parts)]


_DOC_NAMES = re.compile(
    r"^(readme|news|copyright|authors|todo|faq|changes|thanks|.*\.(txt|md|rst))(\.gz)?$", re.IGNORECASE
)


def _doc_paths() -> list[Path]:
    if not DOC_ROOT.is_dir():
        return []
    return [p for p in sorted(DOC_ROOT.rglob("*")) if p.is_file() and not p.is_symlink() and _DOC_NAMES.match(p.name)]


def _license_paths() -> list[Path]:
    return sorted(p for p in LICENSES_ROOT.iterdir() if p.is_file()) if LICENSES_ROOT.is_dir() else []


def dpkg_packages() -> list[dict]:
    """Packages of /var/lib/dpkg/status as dicts (Package, Section, Description = synopsis, Long = the rest)."""
    if not DPKG_STATUS.is_file():
        return []
    packages = []
    for stanza in DPKG_STATUS.read_text(errors="replace").split("\n\n"):
        fields, key = {}, None
        for line in stanza.splitlines():
            if line.startswith((" ", "\t")) and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if "Package" in fields and "Description" in fields:
            synopsis, _, long = fields["Description"].partition("\n")
            long = "\n".join("" if line == "." else line for line in long.splitlines())
            packages.append({**fields, "Description": synopsis, "Long": long})
    return packages


def _dpkg_document(package: dict) -> Document:
    return Document(
        "dpkg",
        f"dpkg:{package['Package']}",
        f"{package['Package']}: {package['Description']}\n{package['Long']}".strip(),
    )


# source -> (the candidates, sorted; how to read one into a Document or None). Candidates are shuffled before
# reading, so only what fits the cap is read (all man pages take 30 s to decompress and strip).
SOURCES = {
    "stdlib": (_stdlib_paths, _file_document("stdlib", Path(sysconfig.get_paths()["stdlib"]))),
    "man": (man_page_paths, _man_document),
    "doc": (_doc_paths, _file_document("doc", DOC_ROOT)),
    "licenses": (_license_paths, _file_document("license", LICENSES_ROOT)),
    "dpkg": (dpkg_packages, _dpkg_document),
}


def documents(seed: int = 0, scale: float = 1.0) -> list[Document]:
    """All documents of the corpus, each source shuffled (seeded) and cut at `scale` x its cap, then interleaved
    by a seeded shuffle. `scale` < 1 gives a small corpus for tests."""
    rng = random.Random(seed)
    chosen: list[Document] = []
    for source, (candidates, read) in SOURCES.items():
        items = candidates()
        rng.shuffle(items)
        budget = int(SOURCE_CAPS[source] * scale)
        for item in items:
            if budget <= 0:
                break
            doc = read(item)
            if doc is not None:
                chosen.append(doc)
                budget -= len(doc.text)
    rng.shuffle(chosen)
    return chosen


def split(docs: list[Document]) -> tuple[list[Document], list[Document]]:
    """(training documents, held-out documents) by `is_heldout`."""
    return [d for d in docs if not is_heldout(d.name)], [d for d in docs if is_heldout(d.name)]


SEPARATOR = "\n\n<|endoftext|>\n\n"  # between documents in the token stream; the tokenizer treats it as special
