"""`python -m trialrun` is the `trialrun` command."""

from trialrun.cli import main

main()
