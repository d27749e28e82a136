"""Demonstrations: the native on-disk format, scripted-expert generation, and the readers/writers of
LIBERO HDF5 and LeRobot datasets that training loads through one entry point."""
