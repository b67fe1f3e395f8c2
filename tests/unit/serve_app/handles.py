"""Stand-ins for DeploymentHandles: ``handle.method.remote(*args)`` -> an awaitable of ``fn(*args)``."""


class Method:
    """One handle method; records the arguments of each call."""

    def __init__(self, fn) -> None:
        self.fn, self.calls = fn, []

    def remote(self, *args):
        self.calls.append(args)

        async def call():
            return self.fn(*args)

        return call()


class Handle:
    def __init__(self, **methods) -> None:
        for name, fn in methods.items():
            setattr(self, name, Method(fn))
