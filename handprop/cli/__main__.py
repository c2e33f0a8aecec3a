"""``python -m handprop.cli``: the ``handprop`` command."""

from . import main

raise SystemExit(main())
