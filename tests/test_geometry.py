import numpy as np
import torch

from lmbench.config.profiles import FinetuneConfig
from lmbench.data.geometry import resize_image, to_input, to_original
from lmbench.train.augment import augment


def test_points_round_trip_through_the_input_size():
    points = np.random.default_rng(0).uniform(0, 1935, size=(19, 2))
    back = to_original(to_input(points, (2400, 1935), 256), (2400, 1935), 256)
    np.testing.assert_allclose(back, points, atol=1e-9)


def test_point_mapping_follows_the_resized_image():
    image = np.zeros((120, 90), np.float32)
    image[60:63, 30:33] = 1.0  # a bright square centred on (31, 61)
    resized = resize_image(image, 30)[0].numpy()
    y, x = np.unravel_index(resized.argmax(), resized.shape)
    expected = to_input(np.array([31.0, 61.0]), (120, 90), 30)
    assert abs(x - expected[0]) <= 0.5 and abs(y - expected[1]) <= 0.5
    assert resized.min() == 0.0 and resized.max() == 1.0


def test_augmentation_moves_landmarks_with_the_image():
    config = FinetuneConfig(augment_probability=1.0, max_rotation=10.0, max_shift=0.1, max_scale=0.1)
    generator = torch.Generator().manual_seed(3)
    for _ in range(5):
        image = torch.zeros(1, 64, 64)
        image[0, 40, 20] = 1.0
        warped, points = augment(image, torch.tensor([[20.0, 40.0]]), config, generator)
        y, x = np.unravel_index(warped[0].numpy().argmax(), (64, 64))
        assert abs(points[0, 0] - x) <= 1.0 and abs(points[0, 1] - y) <= 1.0


def test_augmentation_replicates_the_border():
    config = FinetuneConfig(augment_probability=1.0, max_rotation=2.0, max_shift=0.05, renormalize_warped=False)
    image = torch.ones(1, 32, 32)  # an edge-replicated warp of a constant image stays constant
    warped, _ = augment(image, torch.zeros(1, 2), config, torch.Generator().manual_seed(0))
    assert torch.allclose(warped, image, atol=1e-5)


def test_a_warped_image_is_min_max_normalised_again_as_published_unless_switched_off():
    image = torch.zeros(1, 64, 64)
    image[0, 30:34, 30:34] = torch.tensor([0.2, 0.5, 0.9, 0.4])  # its brightest pixels blur in the warp
    landmarks = torch.tensor([[31.0, 32.0]])
    kept = {}
    for renormalize in (True, False):
        config = FinetuneConfig(augment_probability=1.0, max_rotation=10.0, max_shift=0.03, renormalize_warped=renormalize)
        kept[renormalize] = augment(image, landmarks, config, torch.Generator().manual_seed(1))
    (published, points), (plain, same_points) = kept[True], kept[False]
    assert plain.max() < 0.85 and (published.min(), published.max()) == (0.0, 1.0)
    torch.testing.assert_close(published, plain / plain.max())  # the same warp, stretched; the landmarks alike
    assert torch.equal(points, same_points)


def test_the_published_pool_resize_is_opencvs_linear_and_sharper_than_the_antialiased():
    import cv2

    rng = np.random.default_rng(0)
    image = rng.random((400, 320)).astype(np.float32)  # detail finer than the input's pixels
    linear, antialiased = resize_image(image, 64, "linear")[0].numpy(), resize_image(image, 64)[0].numpy()
    expected = cv2.resize(image, (64, 64), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(linear, (expected - expected.min()) / (expected.max() - expected.min()), atol=1e-6)

    def laplacian_energy(x):
        return float(np.mean(cv2.Laplacian(x, cv2.CV_32F) ** 2))

    assert laplacian_energy(linear) > 2 * laplacian_energy(antialiased)
