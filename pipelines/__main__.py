"""``python -m pipelines``: the ``anomaly-pipelines`` command (:mod:`pipelines.cli`)."""

from pipelines.cli import main

raise SystemExit(main())
