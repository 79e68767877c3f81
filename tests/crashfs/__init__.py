"""A power-loss disk double for tests (FUSE): unsynced writes and directory entries are lost at a cut.

See docs/power-loss.md. `model` holds the state and builds crash images, `daemon` serves it over FUSE,
`image` keeps a crash image on the real disk between mounts, `mount` runs it for a test, `fixtures` has the
pytest fixture.
"""
