"""``python -m handprop.training.compiled``: what the compiled engine runs, as the README
lists it (between its ``compiled-support`` markers)."""

from .capabilities import support_text

print(support_text())
