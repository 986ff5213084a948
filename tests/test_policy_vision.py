"""Camera frames -> Qwen2.5-VL video patches, in the layout of its video processor."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from policy_scenes import make_policy_scene
from rl.policy.vision import CameraVideoEncoder, VideoGeometry

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711])


def reference_patches(frames: np.ndarray, g: VideoGeometry) -> np.ndarray:
    """Qwen2-VL's video patchify (view + permute of its video processor) on normalised frames (T, H, W, 3)."""
    video = torch.from_numpy(((frames / 255.0 - CLIP_MEAN) / CLIP_STD).transpose(0, 3, 1, 2)).float()[None]
    b, t, c, h, w = video.shape
    m, p, tp = g.merge_size, g.patch_size, g.temporal_patch_size
    patches = video.view(b, t // tp, tp, c, h // p // m, m, p, w // p // m, m, p)
    patches = patches.permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)
    return patches.reshape(t // tp * (h // p) * (w // p), c * tp * p * p).numpy()


def test_frames_become_temporal_patches_in_the_video_processor_layout():
    g = VideoGeometry(height=32, width=64, patch_size=8, temporal_patch_size=2, merge_size=2)
    scene = make_policy_scene(0, image_size=(32, 64))
    pixels, grid, seconds = CameraVideoEncoder(g).scene_videos(scene)
    assert grid.tolist() == [[2, 4, 8]] * 3
    assert seconds.tolist() == [1.0, 1.0, 1.0]  # 2 frames at 2 Hz per temporal patch
    assert g.tokens_per_video() == 2 * 4 * 8 // 4
    per_video = 2 * 4 * 8
    for i, camera in enumerate(scene.cameras):
        np.testing.assert_allclose(pixels[i * per_video:(i + 1) * per_video], reference_patches(camera.images, g),
                                   rtol=1e-5, atol=1e-5)


def test_frames_are_resized_to_the_configured_size():
    g = VideoGeometry(height=32, width=64, patch_size=8, temporal_patch_size=2, merge_size=2)
    pixels, grid, _ = CameraVideoEncoder(g).scene_videos(make_policy_scene(1, image_size=(50, 90)))
    assert grid.tolist() == [[2, 4, 8]] * 3 and pixels.shape == (3 * 64, 3 * 2 * 8 * 8)


def test_bad_camera_input_is_a_clear_error():
    g = VideoGeometry(height=32, width=64, patch_size=8, temporal_patch_size=2, merge_size=2)
    scene = make_policy_scene(2)
    scene.cameras[1].images = scene.cameras[1].images[:3]
    with pytest.raises(ValueError, match=r"camera 'CAM_L0' images have shape \(3, 48, 96, 3\)"):
        CameraVideoEncoder(g).scene_videos(scene)
    scene.cameras[1].images = None
    with pytest.raises(ValueError, match="camera 'CAM_L0' has no images"):
        CameraVideoEncoder(g).scene_videos(scene)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        VideoGeometry(height=30, width=64, patch_size=8, temporal_patch_size=2, merge_size=2)
