"""A run directory's life: the manifest (`artifacts`), the lock and status (`runs`), what a stage
checks of an artifact (`integrity`), resuming an interrupted run (`resume`), the non-finite guards
(`guards`), the files that make a model work elsewhere (`portable`) and its model cards (`cards`)."""
