"""Camera frames -> Qwen2.5-VL video inputs.

Each camera's 4 history frames (2 Hz, t = -1.5 ... 0 s) form one video. Frames are resized with PIL to the
configured (height, width); the Qwen2-VL image processor (its PIL backend: there is no torchvision here)
rescales, normalises and cuts every frame into patches; consecutive frame pairs are then stacked into
Qwen2.5-VL's temporal patches exactly as its video processor lays them out:
(grid_t, grid_h / m, grid_w / m, m, m, channel, temporal_patch, patch, patch), m = spatial merge size.
One video gives grid_t * grid_h * grid_w / m^2 `<|video_pad|>` tokens; one temporal patch spans
temporal_patch_size / 2 Hz seconds (`second_per_grid_ts`), which spaces the M-RoPE temporal positions.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from sim import conventions as C
from sim.scene import Scene

CAMERA_RATE_HZ = 1.0 / C.LOG_INTERVAL_S


@dataclass(frozen=True)
class VideoGeometry:
    """How frames become patches: output size and the vision encoder's patching."""

    height: int
    width: int
    patch_size: int
    temporal_patch_size: int
    merge_size: int

    def __post_init__(self) -> None:
        factor = self.patch_size * self.merge_size
        if self.height % factor or self.width % factor:
            raise ValueError(
                f"camera input size {self.height}x{self.width} must be a multiple of patch_size * spatial_merge_size = {factor}"
            )

    def grid(self, num_frames: int) -> tuple[int, int, int]:
        frames = num_frames + (-num_frames % self.temporal_patch_size)
        return frames // self.temporal_patch_size, self.height // self.patch_size, self.width // self.patch_size

    def tokens_per_video(self, num_frames: int = C.NUM_HISTORY_FRAMES) -> int:
        t, h, w = self.grid(num_frames)
        return t * h * w // self.merge_size**2


class CameraVideoEncoder:
    """Builds `pixel_values_videos`, `video_grid_thw` and `second_per_grid_ts` for a scene's 3 cameras."""

    def __init__(self, geometry: VideoGeometry):
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        self.geometry = geometry
        # Temporal patch 1 here: frames are paired below, as Qwen2.5-VL's video processor pairs them.
        self.processor = Qwen2VLImageProcessorPil(
            patch_size=geometry.patch_size, merge_size=geometry.merge_size, temporal_patch_size=1, do_resize=False
        )

    def scene_videos(self, scene: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> pixel values (P, 3 * tp * p * p) float32, grid (3, 3) int64, seconds per temporal patch (3,)."""
        videos = [self._frames(scene, name) for name in C.CAMERA_NAMES]
        patches, grids = zip(*(self._video_patches(v) for v in videos))
        seconds = np.full(len(videos), self.geometry.temporal_patch_size / CAMERA_RATE_HZ, dtype=np.float32)
        return np.concatenate(patches), np.array(grids, dtype=np.int64), seconds

    def _frames(self, scene: Scene, name: str) -> np.ndarray:
        camera = next((c for c in scene.cameras if c.name == name), None)
        if camera is None:
            raise ValueError(f"scene {scene.token!r}: no camera {name!r} (cameras: {[c.name for c in scene.cameras]})")
        images = camera.images
        if images is None:
            raise ValueError(f"scene {scene.token!r}: camera {name!r} has no images (render or load them first)")
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[0] != C.NUM_HISTORY_FRAMES or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"scene {scene.token!r}: camera {name!r} images have shape {images.shape} dtype {images.dtype},"
                f" expected ({C.NUM_HISTORY_FRAMES}, H, W, 3) uint8"
            )
        g = self.geometry
        if images.shape[1:3] == (g.height, g.width):
            return images
        return np.stack([np.asarray(Image.fromarray(f).resize((g.width, g.height), Image.BICUBIC)) for f in images])

    def _video_patches(self, frames: np.ndarray) -> tuple[np.ndarray, list[int]]:
        g = self.geometry
        if len(frames) % g.temporal_patch_size:  # repeat the last frame, as the video processor does
            pad = g.temporal_patch_size - len(frames) % g.temporal_patch_size
            frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)])
        out = self.processor(images=list(frames), return_tensors="np")
        per_frame = out["pixel_values"].reshape(len(frames), -1, 3, g.patch_size, g.patch_size)
        grid_t, grid_h, grid_w = g.grid(len(frames))
        stacked = per_frame.reshape(grid_t, g.temporal_patch_size, grid_h * grid_w, 3, g.patch_size, g.patch_size)
        stacked = stacked.transpose(0, 2, 3, 1, 4, 5)  # (t, patches, channel, temporal, p, p)
        return stacked.reshape(grid_t * grid_h * grid_w, -1).astype(np.float32), [grid_t, grid_h, grid_w]
