"""The registry's one error type, apart so that every registry module can raise it without import cycles."""


class RegistryError(RuntimeError):
    pass
