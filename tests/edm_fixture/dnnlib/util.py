"""A dict with attribute access, as EDM snapshots store their dataset and training options."""


class EasyDict(dict):
    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc

    def __setattr__(self, name, value):
        self[name] = value
