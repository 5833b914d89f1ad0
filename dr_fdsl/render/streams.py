"""Stream numbers of the per-image random numbers: each use of an image's key draws from its own stream."""

from enum import IntEnum, unique


@unique  # a second name with a taken value would be an alias: two uses would draw the same numbers
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
    # 21-39 free. The contest's point augmentations, backgrounds and colouring:
    SUBSAMPLE_GATE = 40
    SCALE_SHIFT_GATE = 41
    JITTER_GATE = 42
    WOLF_START = 43  # published PointWOLF: its first farthest-point anchor
    WOLF_DROPOUT = 44
    WOLF_AXIS = 45
    WOLF_KERNEL_AXIS = 46
    DROP_LOCAL = 47  # cluster count
    DROP_LOCAL_SIZES = 48
    DROP_LOCAL_CENTRES = 49
    ADD_GLOBAL = 50  # positions
    ADD_GLOBAL_SOURCE = 51
    ADD_LOCAL = 52  # cluster count
    ADD_LOCAL_SIZES = 53
    ADD_LOCAL_CENTRES = 54
    ADD_LOCAL_SIGMA = 55
    ADD_LOCAL_OFFSET = 56
    DEPTH_HUE = 57  # saturation, value
    RADIUS_SCALE = 58
    DIAMOND_SQUARE = 59  # one uniform per grid node
    DIAMOND_SQUARE_COLOR = 60  # decay, then the six colouring numbers
    # 61-68 objective sit; 69 free; 70-78 svd2d's window, flips and map jitter, and multi-instance images
    SIT_ROTATION = 61  # objective sit: which quarter-turn rotates each image (the rotation label)
    SIT_JITTER = 62  # colour jitter factors and their order
    SIT_GREY = 63  # the grey rectangle
    SIT_BLUR = 64  # the blurred rectangle, its kernel size and sigma
    SIT_DROP = 65  # the rectangles replaced by noise, and how many pixels they cover
    SIT_NOISE = 66  # the noise
    SIT_REPLACE = 67  # the rectangles taken from another image
    SIT_DONOR = 68  # which image they are taken from
    WINDOW_SCALE = 70  # Anderson & Farrell's window: scale per axis
    WINDOW_SHIFT = 71  # and shift per axis
    DIHEDRAL = 72  # transpose, up-down flip, left-right flip
    OBJECT_COUNT = 73  # multi-instance images: how many objects
    OBJECT_CLASSES = 74  # which other categories
    OBJECT_SCALE = 75
    OBJECT_OFFSET = 76
    OBJECT_SEED = 77  # each further object's own view seed
    MAP_JITTER = 78  # svd2d: which map of the system is scaled per image, and by how much
    RANDOM_COLORS = 79  # renderer.augment.random_colors: the colour of each image, or of each of its points
