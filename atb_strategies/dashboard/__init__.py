"""A read-only web dashboard of a live or paper session (``atb dashboard``, ``atb live
--dashboard``): ``state`` reads the session's files, ``app`` serves them (Starlette), ``server``
binds and runs it (uvicorn, the ``dashboard`` extra)."""
