"""Shared defaults for every resnet_jax config; not a runnable experiment by itself.

Every field the code reads is defined (and commented) here exactly once; the
`model` section's fields are defined in resnet_jax/models/registry.py
(MODEL_FIELDS), the one schema the models and this file share. Dataset, model
and hardware variants import this file and override only what changes:

    from configs import base
    def get_config(arg=None):
      config = base.get_config()
      config.model.depth = 50
      ...

Run any config with:

    python -m resnet_jax.main --config=configs/cifar10.py --workdir=/tmp/run
"""

import ml_collections
from ml_collections import config_dict

from resnet_jax.models import registry


def get_model_config() -> ml_collections.ConfigDict:
  """The `model` section: a ResNet variant described as data.

  Its fields, their defaults and their meaning are defined once, in
  resnet_jax/models/registry.py (MODEL_FIELDS): name, the shape fields
  (family, depth, block, preact, stem, base_width, width_multiplier, groups,
  width_per_group; unset = from `name`, else the family's default), shortcut,
  bottleneck_stride, norm, num_groups, bn_momentum, zero_init_residual,
  bn_group_size. An unset shape field is a typed placeholder, so
  --config.model.depth=56 still parses as an int.
  """
  m = ml_collections.ConfigDict()
  for name, field in registry.MODEL_FIELDS.items():
    m[name] = (field.default if field.default is not None
               else config_dict.placeholder(field.type))
  return m


def get_config(arg=None) -> ml_collections.ConfigDict:
  """Returns the defaults: CIFAR-10, ResNet-20 option A, Adam, 1 epoch."""
  del arg
  config = ml_collections.ConfigDict()

  # --- Data ---------------------------------------------------------------
  # tfds name ('cifar10', 'cifar100', 'imagenet2012', 'imagenette', ...),
  # 'folder:PATH' (a split/class/image tree or a .tar/.tar.gz of one), or
  # 'fake' (random images, for speed runs).
  config.dataset = 'cifar10'
  # Where tfds datasets and folder indexes live ('' = $TFDS_DATA_DIR, else
  # ~/tensorflow_datasets).
  config.data_dir = ''
  # Directory holding archives obtained by hand (tfds `manual_dir`), e.g. the
  # official cifar-10-binary.tar.gz or the ImageNet tars, for offline preparation.
  config.manual_dir = ''
  # Allow tfds to download a dataset that is not prepared yet. Offline, leave it
  # on: a failed download is detected within seconds and explained.
  config.download = True
  # Split expressions ('train', 'train[:45000]', 'train[90%:]', 'train+test');
  # '' = the dataset's 'train' and its 'test' (else 'validation').
  config.train_split = ''
  config.eval_split = ''
  # Input resolution fed to the model; 0 = the dataset's native size (32 for CIFAR),
  # 224 for the 'imagenet' augmentation.
  config.image_size = 0
  # Augmentation: 'cifar' (pad 4 + random crop + flip), 'imagenet'
  # (torchvision's random resized crop + flip; eval resize + centre crop), or 'none'.
  config.augment = 'cifar'
  # The recipes' host augmentations, in training, after the crop and flip (timm's
  # order): a timm RandAugment string ('' = off; ResNet strikes back A1:
  # 'rand-m7-mstd0.5-inc1'), torchvision's TrivialAugment-wide (instead of it),
  # and random erasing with this probability and mode ('const', 'rand', 'pixel').
  config.rand_augment = ''
  config.trivial_augment = False
  config.random_erasing = 0.0
  config.random_erasing_mode = 'pixel'
  # Repeated augmentation (timm's RepeatAugSampler): each example k times in a
  # row of the epoch's order, augmented differently, its copies on different
  # devices; epochs keep their length. 1 = off; ResNet strikes back: 3.
  config.repeated_augmentation = 1
  # Evaluation transform of augment='imagenet'. 0: the centre 224/256 of the
  # shorter side, resized to image_size (the TF ResNet reference). N > 0:
  # torchvision's, the shorter side resized to N, then the centre image_size
  # crop (torchvision evaluates its V1 weights at 256, its V2 weights at 232).
  config.eval_resize = 0
  # Per-channel normalisation statistics in [0, 1] units, e.g. (0.485, 0.456,
  # 0.406) and (0.229, 0.224, 0.225); () = the dataset's: CIFAR-10/100's
  # published values, a folder's own (measured when it is indexed), ImageNet's
  # for other tfds datasets. Recorded in the run's config.json.
  config.mean = ()
  config.std = ()
  # Where the training data lives: 'device' (the whole train split on every
  # device, crop + flip inside the step; fixed-size images, CIFAR-sized data),
  # 'host' (streamed from worker processes), or 'auto' (device when the split is
  # decoded at the model's size, fits in 1 GiB and augment is 'cifar' or 'none').
  config.placement = 'auto'
  # Host worker processes decoding and augmenting examples; -1 = one per CPU
  # core, 0 = in the training process.
  config.num_workers = -1
  # What to do with an unreadable image in a folder dataset: 'skip' (log, count) or 'error'.
  config.on_corrupt_image = 'skip'
  # Batches prefetched to the devices ahead of the step.
  config.prefetch_batches = 2

  # --- Model --------------------------------------------------------------
  config.model = get_model_config()
  # Number of classes; 0 = read from the dataset's info.
  config.num_classes = 0
  # Compute dtype: 'float32', 'bfloat16' or 'float16' (params stay float32;
  # float16 uses dynamic loss scaling).
  config.dtype = 'float32'
  # On a CPU only: model formulations that compute the same values faster under
  # XLA:CPU (resnet_jax/models/fast_paths.py); never applied on a GPU or TPU.
  # False: the plain layers.
  config.cpu_fast_paths = True

  # --- Optimisation ---------------------------------------------------------
  # 'adam', 'adamw', 'sgd' (momentum), 'nesterov' (SGD with Nesterov momentum),
  # 'lamb' or 'lars' (timm's Lamb and Lars, as ResNet strikes back uses them).
  config.optimizer = 'adam'
  # Peak learning rate (after warmup).
  config.learning_rate = 1e-3
  # Momentum for sgd/nesterov/lars; b1 for adam(w)/lamb. In [0, 1).
  config.momentum = 0.9
  # b2 (second-moment decay) for adam(w)/lamb. In [0, 1).
  config.beta2 = 0.999
  # The epsilon of adam(w)/lamb's denominator and of lars's trust ratio;
  # unset = the optimizer's default (1e-8; lamb 1e-6, timm's).
  config.eps = config_dict.placeholder(float)
  # Weight decay on conv and dense kernels only (BN and biases are masked out).
  # lamb and lars adapt their steps only where it applies: with 0, lamb is
  # Adam with clipping and lars is SGD (timm's always_adapt=False).
  config.weight_decay = 0.0
  # 'l2' (added to the loss gradient, as in the paper) or 'decoupled' (AdamW-style);
  # lamb and lars have their own (part of the layer-wise step) and need 'l2'.
  config.weight_decay_type = 'l2'
  # lamb: clip the gradient to this global norm inside the optimizer (timm's
  # Lamb max_grad_norm; after grad_clip_norm); 0 disables it.
  config.lamb_max_grad_norm = 1.0
  # lars: the trust coefficient eta of the layer-wise ratio
  # eta * |w| / (|g| + weight_decay * |w| + eps).
  config.lars_trust_coefficient = 1e-3
  # Learning-rate schedule: 'constant', 'piecewise' or 'cosine'.
  config.schedule = 'constant'
  # Linear warmup length, in steps (or epochs: warmup_epochs wins when > 0).
  config.warmup_steps = 0
  config.warmup_epochs = 0.0
  # 'piecewise': multiply the lr by `lr_decay_factor` at each boundary, given in
  # steps (lr_boundaries_steps) or epochs (lr_boundaries_epochs, used when non-empty).
  config.lr_boundaries_steps = (32_000, 48_000)
  config.lr_boundaries_epochs = ()
  config.lr_decay_factor = 0.1
  # Clip gradients to this global norm; 0 disables clipping.
  config.grad_clip_norm = 0.0
  # Gradient accumulation: each optimizer update averages the gradients of k
  # micro-batches of batch_size / k, computed one after the other inside the
  # step, so a large-batch recipe runs on fewer devices. Lengths and periods
  # count updates of batch_size examples; BatchNorm normalises over each
  # micro-batch. 1 = off.
  config.grad_accumulation_steps = 1

  # --- Recipe: the modern training recipes' parts (each off by default) -----
  # The loss: 'softmax' (cross-entropy) or 'bce' (timm's binary cross-entropy,
  # as ResNet strikes back trains with).
  config.loss = 'softmax'
  # Label smoothing of the one-hot targets (0 = none; folded into Mixup's targets).
  config.label_smoothing = 0.0
  # With loss='bce': targets above this become 1, the rest 0 (timm's
  # target_threshold; ResNet strikes back: 0.2); 0 = soft targets.
  config.bce_target_threshold = 0.0
  # Mixup / CutMix over the global batch, on the device (timm's Mixup, mode
  # 'batch'): Beta(alpha, alpha) for each (0 = off); CutMix box sides drawn in
  # (min, max) of the image instead when set; the probability a batch is mixed;
  # the probability of CutMix rather than Mixup when both are on.
  config.mixup_alpha = 0.0
  config.cutmix_alpha = 0.0
  config.cutmix_minmax = ()
  config.mixup_prob = 1.0
  config.mixup_switch_prob = 0.5
  # EMA of the weights and BatchNorm statistics (timm's ModelEmaV3), evaluated
  # beside the raw weights: its decay (0 = off), and the decay's warmup
  # 1 - (1 + step / gamma) ** -power (timm's use_warmup).
  config.ema_decay = 0.0
  config.ema_warmup = False
  config.ema_warmup_gamma = 1.0
  config.ema_warmup_power = 0.75
  # Knowledge distillation (Bag of Tricks): a checkpoint (workdir) whose model
  # teaches this one, run in the same step ('' = none), and the temperature
  # of the soft targets: loss += T^2 * CE(softmax(teacher / T), softmax(student / T)).
  config.teacher = ''
  config.distill_temperature = 1.0

  # --- Loop ---------------------------------------------------------------
  # Global batch size over all devices and hosts.
  config.batch_size = 128
  # Global eval batch size (0 = batch_size).
  config.eval_batch_size = 0
  # Training length in steps; -1 = num_epochs * steps_per_epoch.
  config.num_train_steps = -1
  config.num_epochs = 1.0
  # Fetch and log training metrics every N steps (the only host sync in the loop).
  config.log_every_steps = 50
  # Evaluate every N steps (and always at the end); -1 = once per epoch.
  config.eval_every_steps = -1
  # Evaluate on at most this many eval batches (-1 = the whole split).
  config.num_eval_batches = -1
  # Save a checkpoint every N steps (and at the end); -1 = once per epoch.
  config.checkpoint_every_steps = -1
  # Keep the last K checkpoints (plus the best by eval top-1).
  config.keep_checkpoints = 3
  # Warm-start weights from this checkpoint directory (fine-tuning); '' = none.
  config.init_from = ''
  # When init_from has a different number of classes, leave out the classifier.
  config.init_from_skip_head = True
  # Warm-start from init_from's EMA of the weights (a run with ema_decay).
  config.init_from_ema = False
  config.seed = 0

  # --- Distributed --------------------------------------------------------
  # Call jax.distributed.initialize() before anything else (multi-host runs).
  # With coordinator_address empty, JAX auto-detects (SLURM, TPU pods, ...).
  config.distributed = False
  config.coordinator_address = ''
  config.num_processes = 0
  config.process_id = -1
  return config
