"""``python -m actsteer.cli``: the ``actsteer`` command."""

import sys

from actsteer.cli import main

sys.exit(main())
