"""`python -m trialrun.testing`: serve a fake provider API (see `fake_servers.main`)."""

from trialrun.testing.fake_servers import main

main()
