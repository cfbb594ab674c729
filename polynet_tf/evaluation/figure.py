"""Drawing a protocol's crop boxes on one image (matplotlib, the `[plot]` extra)."""

import numpy as np

from polynet_tf import figures
from polynet_tf.evaluation import protocols

# One colour per position of the googlenet layout (corners, centre, whole square).
_COLOURS = ("tab:red", "tab:orange", "tab:green", "tab:blue", "tab:purple", "white")


def save_crops_figure(image: np.ndarray, protocol: protocols.CropProtocol, path: str,
                      columns: int = 4) -> str:
    """Draws the crop boxes of one image, one panel per scale, and saves a PNG.

    Each panel shows the image resized for that scale with its boxes; mirrored
    crops share their twin's box (the title says so). The PNG is rendered in
    memory, written under a temporary name and renamed.

    Args:
      image: uint8 `[height, width, 3]`, the decoded image.
      protocol: the `CropProtocol`.
      path: the PNG to write (a local path or URI).
      columns: panels per row.

    Returns:
      `path`.

    Raises:
      ImportError: if matplotlib is missing (`pip install 'polynet-tf[plot]'`).
    """
    figures.pyplot()  # a clear ImportError without matplotlib
    from matplotlib import patches  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    image = np.asarray(image, np.uint8)
    height, width = image.shape[:2]
    layout = protocol.crop_layout(height, width)
    columns = min(columns, protocol.num_scales)
    rows = -(-protocol.num_scales // columns)
    with figures.png_figure(path, rows, columns, figsize=(4 * columns, 4 * rows), squeeze=False,
                            save_dpi=80) as (figure, axes):
        unmirrored = ~layout.mirrored
        for scale_index in range(protocol.num_scales):
            axis = axes[scale_index // columns][scale_index % columns]
            scaled_height, scaled_width = layout.scaled_sizes[scale_index]
            axis.imshow(Image.fromarray(image).resize((scaled_width, scaled_height),
                                                      Image.BILINEAR))
            chosen = (layout.scale_indices == scale_index) & unmirrored
            for number, (y0, x0, y1, x1) in enumerate(layout.boxes[chosen]):
                colour = _COLOURS[number % protocol.boxes_per_scale % len(_COLOURS)]
                axis.add_patch(patches.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0,
                                                 fill=False, edgecolor=colour, linewidth=1.2))
            scale = protocol.scales[scale_index] if protocol.scales else "as decoded"
            axis.set_title(f"scale {scale}: {scaled_height}x{scaled_width}, "
                           f"{int(chosen.sum())} boxes" + (" (x2 mirrored)" if protocol.mirror
                                                            else ""), fontsize=9)
            axis.set_xlim(-0.5, scaled_width - 0.5)
            axis.set_ylim(scaled_height - 0.5, -0.5)
        if protocol.layout == "googlenet":
            handles = [patches.Patch(edgecolor=c, facecolor="none", label=n.replace("_", " "))
                       for c, n in zip(_COLOURS, protocols.GOOGLENET_POSITIONS)]
            axes[0][0].legend(handles=handles, fontsize=7, loc="lower left", framealpha=0.6,
                              title="in each of the 3 squares", title_fontsize=7)
        for index in range(protocol.num_scales, rows * columns):
            axes[index // columns][index % columns].axis("off")
        figure.suptitle(f"{protocol.name}: {protocol.num_crops} crops of {protocol.crop_size}x"
                        f"{protocol.crop_size} from a {height}x{width} image")
    return path
