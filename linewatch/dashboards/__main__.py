"""``python -m linewatch.dashboards --out dashboards/`` (kept for scripts; ``linewatch dashboards build`` is
the same)."""

import sys

from linewatch.dashboards import main

sys.exit(main())
