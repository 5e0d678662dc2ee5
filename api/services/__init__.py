"""Operations shared by the native API (/api/v1) and the OpenAI-compatible API (/v1): one implementation each,
so the same rows behave the same whichever API touches them. Routers translate; these functions decide."""
