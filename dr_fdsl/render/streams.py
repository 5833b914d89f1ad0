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
    INSTANCE = 19  # bank.<family>.instances: which instance (weight row, flip, centre) an image draws
    INSTANCE_GREY = 20  # bank.visualatom.instances: each orbit's grey level
