"""Demonstrations: the native on-disk format, scripted-expert generation, and the readers/writers of
LIBERO HDF5 and LeRobot datasets that training loads through one entry point.

formats.load_demos (entry point, detect_format) -> native (apt-bench format, `Demos`),
libero_hdf5 / lerobot (external readers; shared glue in decoded). generate (generate_demos,
`apt-bench demos`) -> episodes (plan, seeds), record (the worker), native / libero_hdf5 writers."""
