"""Opening every photo format people keep, upright and in sRGB, within safe limits.

One module per job: :mod:`.limits` (what is refused from the header), :mod:`.formats`
(which content is accepted and how a format is known), :mod:`.colour` (embedded ICC
profiles and HEIF/AVIF nclx boxes to sRGB), :mod:`.raw` (camera RAW through LibRaw) and
:mod:`.reader` (bytes in, an upright sRGB picture out). Nothing here imports torch: the
web page's thumbnails use it as the workers do.
"""

from imgwatch.photos.reader import Photo, open_photo

__all__ = ["Photo", "open_photo"]
