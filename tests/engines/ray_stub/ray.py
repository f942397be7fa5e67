"""A stand-in for the `ray` package that runs tasks in this process, so the Ray driver in
deploy/ray/strata_ray.py is tested without a cluster: remote functions run when called
with .remote(), get() returns their results, init() records its address."""

calls = {"init": None, "tasks": 0}


def init(address=None, **_):
    calls["init"] = address


def remote(*args, **_):
    def wrap(fn):
        class Remote:
            @staticmethod
            def remote(*a, **k):
                calls["tasks"] += 1
                return fn(*a, **k)

        return Remote

    if len(args) == 1 and callable(args[0]):
        return wrap(args[0])
    return wrap


def get(refs):
    return list(refs)
