"""sim_hw: the physical world and the simulated hardware of a satellite constellation.

Pure models on numpy and sgp4, no Ray: the clock (`clock`), orbits (`orbits`, `frames`, `sun`),
geometry (`geometry`), links and the contact plan (`links`, `contact_plan`), power (`power`),
device models (`devices`), the imager's synthetic ground (`scene`), faults (`faults`),
hardware profiles and constellation configs (`profile`, `constellation`, `spec_loading`) and the
whole-constellation run behind `orbitos world` (`world`).
"""
