"""The ad server: in-memory targeting index, second-price auction, signed request ids, served-ads log."""

# First, whatever is imported: adplatform's import removes a stale compiled build (adplatform.native)
# before a compiled module of this package loads it (`python -c "import adserver.http.direct"` after an
# edit crashed the interpreter: the guard ran inside the library's own import).
import adplatform  # noqa: F401
