"""Publishing: a run's kept rows as a Hub-layout dataset, and Hub cards and pushes."""
