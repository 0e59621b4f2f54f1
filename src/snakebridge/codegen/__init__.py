"""Code generation: scan the project, introspect libraries, write typed facade packages."""
