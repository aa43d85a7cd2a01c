"""RigL at 90 % sparsity in a plain PyTorch loop (scikit-learn's 8x8 digits, an MLP).

The lines marked ``# sparsecl`` are all that sparse training adds; a state_dict round trip resumes it.
Run: python examples/rigl_own_loop.py
"""

import torch
import torch.nn.functional as F
from torch import nn

import sparsecl

torch.manual_seed(0)
data = sparsecl.load_dataset("digits")  # uint8 [N, 1, 8, 8]; any tensors would do
x_train, y_train = data.x_train.flatten(1).float() / 255, data.y_train
x_test, y_test = data.x_test.flatten(1).float() / 255, data.y_test

model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
epochs, batch = 20, 64
steps = epochs * -(-len(y_train) // batch)
sparsifier = sparsecl.Sparsifier(model, optimizer, method="rigl", density=0.1, total_steps=steps,  # sparsecl
                                 delta_t=25)                                                         # sparsecl

g = torch.Generator().manual_seed(0)
for epoch in range(epochs):
    for idx in torch.randperm(len(y_train), generator=g).split(batch):
        optimizer.zero_grad()
        F.cross_entropy(model(x_train[idx]), y_train[idx]).backward()
        sparsifier.step()  # sparsecl: instead of optimizer.step()
    if epoch == epochs // 2:  # a checkpoint round trip halfway: state_dict / load_state_dict
        saved = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "sparsity": sparsifier.state_dict()}
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        sparsifier.load_state_dict(saved["sparsity"])

with torch.no_grad():
    accuracy = 100.0 * (model(x_test).argmax(1) == y_test).float().mean().item()
print(f"density {sparsifier.density():.4f}")
print(f"test accuracy {accuracy:.2f}")
