"""No pre-training: the backbone keeps its random initialisation (seeded by the run)."""

from lmbench.api import PretrainContext, Pretrainer


class Scratch(Pretrainer):
    trains = False

    def pretrain(self, context: PretrainContext):
        return None
