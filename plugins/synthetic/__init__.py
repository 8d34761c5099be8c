from lmbench.api import hookimpl


@hookimpl
def lmbench_register_datasets(register):
    register("synthetic", "lmbench_plugins.synthetic.dataset:SyntheticHands")
