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
    SIT_ROTATION = 19  # objective sit: which quarter-turn rotates each image (the rotation label)
    SIT_JITTER = 20  # colour jitter factors and their order
    SIT_GREY = 21  # the grey rectangle
    SIT_BLUR = 22  # the blurred rectangle, its kernel size and sigma
    SIT_DROP = 23  # the rectangles replaced by noise, and how many pixels they cover
    SIT_NOISE = 24  # the noise
    SIT_REPLACE = 25  # the rectangles taken from another image
    SIT_DONOR = 26  # which image they are taken from
