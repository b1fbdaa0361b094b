"""The full config tree with every field at its default.

Every built-in recipe starts from ``get_config()`` here and changes what it needs, so the
tree (and therefore the CLI's ``--config.a.b=value`` overrides and the search space's dotted
paths) always has the same fields. The field names are the public vocabulary fixed in
DESIGN.md; add fields freely, rename none.

Command: ``python -m recipes.train --config=base --workdir=/tmp/base`` (digits, MLP).
"""

from __future__ import annotations

import ml_collections

import models


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the default config tree (the lecture's 2-layer net on digits)."""
    del arg
    c = ml_collections.ConfigDict()

    c.dataset = ml_collections.ConfigDict()
    # digits | fashion_mnist | mnist | cifar10 | cifar100 | npz:PATH | folder:PATH | tfds:NAME
    c.dataset.name = "digits"
    c.dataset.data_dir = ""  # "" = the dataset's default location (tfds: TFDS's data dir)
    c.dataset.image_size = ()  # folder: (height, width) every image is resized to; () = the first's
    c.dataset.color_mode = "auto"  # folder: auto | grayscale | rgb
    c.dataset.test_size = 0.2  # folder without train/ and test/: stratified, seeded test fraction
    c.dataset.val_size = 0.1  # fraction of train held out, stratified and seeded
    c.dataset.seed = 0
    c.dataset.preprocess = "standardize"  # none|mean_image|per_channel_mean|standardize|pca|zca
    c.dataset.pca_components = 0.99  # pca: an int keeps k components, a float that variance
    c.dataset.zca_epsilon = 1e-2  # zca: added to the eigenvalues before the inverse sqrt
    c.dataset.limit = 0  # >0: keep only this many training examples (quick runs, tests)

    c.augment = ml_collections.ConfigDict()
    c.augment.crop_padding = 0  # pixels of zero padding before a random crop of crop_size
    c.augment.crop_size = 0  # 0 = the image size (no crop unless crop_padding > 0)
    c.augment.flip = "none"  # none | horizontal | vertical | horizontal_and_vertical
    c.augment.rotation = 0.0  # fraction of a full turn, as keras.layers.RandomRotation
    c.augment.translation = 0.0  # fraction of height/width
    c.augment.shear = 0.0  # shear intensity, as keras.layers.RandomShear
    c.augment.zoom = 0.0  # fraction, as keras.layers.RandomZoom
    c.augment.color_jitter = 0.0  # brightness/contrast/saturation/hue strength, RGB only
    c.augment.noise_std = 0.0  # additive Gaussian noise on the [0, 1] images
    c.augment.erasing = 0.0  # probability of random erasing
    c.augment.randaugment = 0  # number of RandAugment ops per image (0 = off)
    c.augment.randaugment_magnitude = 0.5
    c.augment.mixup = 0.0  # MixUp alpha (0 = off)
    c.augment.cutmix = 0.0  # CutMix alpha (0 = off)

    c.model = models.default_config()  # arch, hidden, activation, init, norm, ... (models/)

    c.loss = ml_collections.ConfigDict()
    c.loss.name = "softmax"  # softmax | svm
    c.loss.label_smoothing = 0.0
    c.loss.svm_margin = 1.0

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adam"  # sgd|momentum|nesterov|adagrad|rmsprop|adam|adamw
    c.optimizer.learning_rate = 1e-3
    c.optimizer.momentum = 0.9
    c.optimizer.rho = 0.9
    c.optimizer.beta_1 = 0.9
    c.optimizer.beta_2 = 0.999
    c.optimizer.epsilon = 1e-8
    c.optimizer.weight_decay = 0.0  # decoupled, adamw only
    c.optimizer.clipnorm = 0.0  # 0 = off
    c.optimizer.momentum_start = 0.5  # MomentumSchedule: ramp momentum/beta_1 from this ...
    c.optimizer.momentum_epochs = 0  # ... to optimizer.momentum over these epochs (0 = off)
    c.optimizer.switch_to = ""  # SwitchOptimizer: e.g. "momentum" (SGD+momentum) ...
    c.optimizer.switch_epoch = 0  # ... from this epoch on, keeping the weights ("" = off)
    c.optimizer.switch_learning_rate = 0.0  # lr after the switch (0 = keep the current one)
    # Polyak averaging of the weights (Keras's use_ema/ema_momentum): validated and saved
    # with the average; the EMA momentum, e.g. 0.99 or 0.999 (0 = off).
    c.optimizer.ema = 0.0

    c.schedule = ml_collections.ConfigDict()
    c.schedule.name = "constant"
    c.schedule.warmup_epochs = 0.0
    c.schedule.decay_rate = 0.1  # step: factor; exponential/inverse: k per epoch
    c.schedule.step_epochs = 10  # step: every N epochs
    c.schedule.epoch_decay = 0.97  # epoch_decay: factor per epoch (GoogLeNet)
    c.schedule.cycles = 3  # cosine_restarts, triangular
    c.schedule.alpha = 0.0  # cosine: final lr as a fraction of the initial one
    c.schedule.plateau_factor = 0.5
    c.schedule.plateau_patience = 3
    c.schedule.pct_start = 0.25  # one_cycle: fraction of the run warming up (fastai's 0.25)
    # one_cycle: lr/div -> lr -> lr/(div*div_final); triangular: lr/div <-> lr.
    c.schedule.div = 0.0  # 0 = the schedule's own: 25 (one_cycle, fastai), 4 (triangular, Smith)
    c.schedule.div_final = 1e5  # one_cycle (fastai's 1e5)
    # one_cycle/triangular: momentum (adam: beta_1) cycles opposite to the lr, from
    # optimizer.momentum down to momentum_low and back (fastai's moms 0.95, 0.85, 0.95).
    c.schedule.momentum_cycle = True
    c.schedule.momentum_low = 0.85

    c.train = ml_collections.ConfigDict()
    c.train.epochs = 30
    c.train.batch_size = 64
    c.train.full_batch = False  # the lecture's sample_batches=False
    c.train.shuffle = True  # reshuffle every epoch; off only for the "cyclic loss" lesson
    c.train.seed = 0
    # Op determinism (tf.config.experimental.enable_op_determinism): with train.seed, two runs
    # give bit-identical histories on CPU. Costs little on CPU; on GPU some ops get slower
    # or raise UnimplementedError — set False there for speed (docs/training.md).
    c.train.deterministic = True
    c.train.distribute = "none"  # none | mirrored | multi_worker | tpu
    c.train.verbose = 1  # 1 = progress bar, 2 = one line per epoch, 0 = quiet
    c.train.jit_compile = "auto"
    # float32 | mixed_bfloat16 (bf16 compute, float32 weights and logits; Micikevicius et al.
    # 2018): faster only where the CPU has AVX-512 BF16 or AMX (docs/results/machine.json).
    c.train.dtype_policy = "float32"
    # Keep the weights of the epoch with the best val_accuracy (Keras EarlyStopping's
    # restore_best_weights without the stop); babysit's run as given (fit=) turns it off.
    c.train.restore_best = True
    # history.csv, the monitors' records, the backup and best.keras are written together once
    # this long has passed since the last write (and at the end): a kill loses at most this
    # long or one epoch. 0: after every epoch (Keras's BackupAndRestore default).
    c.train.save_every_seconds = 10.0
    c.train.prior_bias = True  # logits bias = ln(class priors) when classes are imbalanced
    c.train.progressive_epochs = 0  # first k epochs at the lower resolution (0 = off)
    c.train.progressive_scale = 0.5  # side length factor in (0, 1) of those epochs' images

    c.monitor = ml_collections.ConfigDict()
    c.monitor.explosion_factor = 3.0  # stop when loss > factor x initial loss (0 = off)
    # On by default: all five cost ~2.6 % of an epoch (benchmarks/monitor_overhead.py;
    # docs/results/monitor_overhead.json), a fixed ~12 ms per epoch on tiny datasets.
    c.monitor.update_ratio_every = 100  # steps between update/weight ratio samples (0 = off)
    c.monitor.activations_every = 1  # epochs between activation statistics, 256-image probe
    c.monitor.first_layer_every = 5  # epochs between first-layer weight images (0 = off)
    c.monitor.gradient_norms_every = 1  # epochs between per-layer gradient norms (0 = off)
    c.monitor.tensorboard = True

    c.babysit = ml_collections.ConfigDict()
    # "all", or a comma list of checks,sanity,overfit,lr_range,search,train,diagnose,repair,
    # report (babysit.run(fit=...) defaults to checks,train,diagnose,repair,report)
    c.babysit.steps = "all"
    c.babysit.initial_loss_tolerance = 0.1  # |loss0 - ln C| / ln C that passes
    c.babysit.overfit_examples = 20  # the lecture's "overfit a tiny subset"
    c.babysit.overfit_epochs = 200  # full-batch updates
    c.babysit.lr_min = 1e-6  # learning-rate range: log-spaced from lr_min ...
    c.babysit.lr_max = 10.0  # ... to lr_max
    c.babysit.lr_points = 8
    c.babysit.lr_epochs = 1.0  # length of each lr-range run (fractions allowed)
    c.babysit.repair_rounds = 2  # rounds of: apply the top remedy, retrain, keep if val improves
    c.babysit.repair_budget = 2.0  # repair training time, as a multiple of the first run's

    c.search = ml_collections.ConfigDict()
    c.search.space = "optimizer.learning_rate=log:1e-5:1e-1,model.l2=log:1e-6:1e-2"
    c.search.strategy = "random"  # random | grid | hyperband
    c.search.hyperband_factor = 3  # hyperband: epochs x factor, trials / factor per round
    c.search.stages = "20x1,10x4"  # trials x epochs per coarse-to-fine stage
    c.search.keep_top = 5  # trials whose values the next stage's ranges span
    c.search.seed = 0

    c.evaluate = ml_collections.ConfigDict()
    c.evaluate.tta = "none"  # none | center | five_crop | ten_crop | grid
    c.evaluate.grid = 3
    c.evaluate.tta_every = 0  # epochs between val_tta_accuracy measurements (0 = only at the end)
    return c
