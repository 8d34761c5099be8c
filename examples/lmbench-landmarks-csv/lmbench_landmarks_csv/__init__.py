"""Registers the dataset; the class is imported only when a matrix uses it."""

from lmbench.api import hookimpl


@hookimpl
def lmbench_register_datasets(register):
    register("landmarks-csv", "lmbench_landmarks_csv.dataset:LandmarksCsv")
