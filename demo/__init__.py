"""The demo trainer: the reference report's GPT experiment (pccheck-train, pccheck-validate), one client of the
library and the launcher, as any user script is."""
