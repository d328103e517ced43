"""`python -m trialrun.testing`: serve a fake provider API (see `trialrun.testing.cli`)."""

from trialrun.testing.cli import main

main()
