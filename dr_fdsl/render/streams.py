"""Stream numbers of the per-image random numbers: each use of an image's key draws from its own stream."""

from enum import IntEnum


class Stream(IntEnum):
    ROTATION = 1  # 1, 2, 3: quaternion, or azimuth / elevation / roll
    DISTANCE = 4
    FOCAL = 5
    SCALE = 6
    SHIFT = 7
    SUBSAMPLE = 8
    SUBSAMPLE_RATE = 9
    JITTER = 10
    WOLF_ANCHOR = 11
    WOLF_SCALE = 12
    WOLF_ROTATION = 13
    WOLF_SHIFT = 14
    MIX_CLASS = 15
    MIX_POINTS = 16
    BACKGROUND = 17
    MIM_MASK = 18  # objective mim: which pixel patches are masked
    # svd2d branch. Numbered from 60, not 19, so that streams other branches append meanwhile cannot take the same
    # values (an IntEnum makes a second name with a taken value an alias: two uses would draw the same numbers).
    WINDOW_SCALE = 60  # Anderson & Farrell's window: scale per axis
    WINDOW_SHIFT = 61  # and shift per axis
    DIHEDRAL = 62  # transpose, up-down flip, left-right flip
    OBJECT_COUNT = 63  # multi-instance images: how many objects
    OBJECT_CLASSES = 64  # which other categories
    OBJECT_SCALE = 65
    OBJECT_OFFSET = 66
    OBJECT_SEED = 67  # each further object's own view seed
    MAP_JITTER = 68  # svd2d: which map of the system is scaled per image, and by how much
