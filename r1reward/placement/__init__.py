"""Where every actor runs: the pure plan (`plan`: bundles per role, fitting a cluster), the Ray side
(`groups`: placement groups, node addresses), starting or joining Ray (`ray_init`), and the fan-out
helpers the role groups share (`remote`: splitting work, waiting with a timeout).

`plan` imports no Ray, so the launcher can check and print a plan before any cluster exists; import
the submodules directly (this package imports nothing on its own)."""
