"""The core's exceptions, in a module of their own: the compiled modules (mypyc) cannot
define subclasses of built-in exceptions, and every build raises the same classes."""


class UnknownCommand(TypeError):
    """The matching engine was given something that is not a ``match.in`` command."""
