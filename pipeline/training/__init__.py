"""Training of the U-Net: MONAI data feeding, losses, optimisation, checkpoints, DDP, the loop.

Modules: `data` (transforms, datasets, loaders), `augment` (2D/3D elastic deformation), `losses`,
`optim`, `checkpoint`, `distributed`, `validation`, `history`, `trainer` (the loop). Import the
module you need; nothing heavy is imported here.
"""
