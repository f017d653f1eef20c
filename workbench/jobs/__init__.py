"""Moving work off this machine and back: a project's data and settings as a ready-to-run job
for another engine (TRL with accelerate, OpenRLHF with Ray), and adapters trained there
imported back as runs of the project."""
