"""What can be wrong with an env id, its options or a user's env: each error says what to change."""


class UnknownEnvError(ValueError):
    """The env id matches no backend."""


class EnvOptionError(ValueError):
    """An option the chosen backend does not have, or a value it cannot take."""


class EnvContractError(ValueError):
    """A user's environment does not keep ezv's contract; the message says what to change."""


# The domain of every user's env (registered ids, `module:factory` ids, gymnasium envs).
CUSTOM_DOMAIN = "custom"
