"""SparCL (Wang et al., NeurIPS 2022) in your own loop: weight, data and gradient sparsity around DER++.

Five digit tasks of two classes (Class-IL). TDM keeps the hidden layers at 10 % density, DDR drops 30 % of
each task's examples, DGM drops a fifth of the active gradients; each is an object whose methods you call
at the loop's named moments (a ``Pipeline`` calls them in order). Run: python examples/sparcl_own_loop.py
"""

import torch
import torch.nn.functional as F
from torch import nn

import sparsecl

data = sparsecl.load_dataset("digits")
x_train, y_train = data.x_train.flatten(1).float() / 255, data.y_train
x_test, y_test = data.x_test.flatten(1).float() / 255, data.y_test
epochs, batch = 5, 32

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
tasks = [sparsecl.Task(t, (2 * t, 2 * t + 1), ((y_train == 2 * t) | (y_train == 2 * t + 1)).nonzero().flatten(),
                       torch.empty(0, dtype=torch.int64)) for t in range(5)]
total_steps = sum(epochs * -(-len(task.train_idx) // batch) for task in tasks)

# the mask engine holds the weight masks: a magnitude prune of every layer but the classifier to 10 %
# (init=rescale: survivors scaled so each unit's activation variance at init is the dense network's)
masks = sparsecl.SparsityConfig(method="magnitude", density=0.1, layers="sparcl", init="rescale")
engine = sparsecl.MaskEngine(model, optimizer, masks, total_steps, generator=torch.Generator().manual_seed(0))
engine.begin()
sc = sparsecl.SparclConfig(tdm=True, ddr=True, dgm=True, dgm_ratio=1 - 0.8 * 0.1)
weights = dict(model.named_parameters())
sparcl = sparsecl.Pipeline({  # TDM reads the dense gradient before DGM masks it
    "tdm": sparsecl.TaskAwareDynamicMasking(engine, sc, torch.Generator().manual_seed(1)),
    "ddr": sparsecl.DynamicDataRemoval.from_config(sc, len(y_train), torch.Generator().manual_seed(2), "cpu"),
    "dgm": sparsecl.DynamicGradientMasking.from_config(sc, {n: weights[n] for n in engine.masks}, engine),
})
buffer = sparsecl.Buffer(200, (64,), 10, device="cpu", generator=torch.Generator().manual_seed(3),
                         store_logits=True, dtype=torch.float32)
replay = sparsecl.DERppReplay(buffer, alpha=0.3, beta=0.5, generator=torch.Generator().manual_seed(4))
state = sparsecl.LoopState(model, optimizer, None, torch.device("cpu"), total_steps, epochs_per_task=epochs)
g = torch.Generator().manual_seed(5)

for task in tasks:
    state.task, state.active_idx = task.id, task.train_idx  # DDR shrinks state.active_idx at epoch ends
    sparcl.on_task_start(state, task)
    for epoch in range(epochs):
        state.epoch = epoch
        batches = state.active_idx[torch.randperm(len(state.active_idx), generator=g)].split(batch)
        for i, idx in enumerate(batches):
            b = sparsecl.Batch(x_train[idx], y_train[idx], x_train[idx], idx, task.id)
            logits = model(b.x)
            current = F.cross_entropy(logits, b.y)
            parts = {"current": current} if buffer.empty else {"current": current, "buffer": replay.loss(model, len(b))}
            out = sparsecl.StepOutput(sum(parts.values()), logits, len(b), parts=parts)
            optimizer.zero_grad()
            sparcl.before_backward(state, b, out)
            out.loss.backward()
            sparcl.after_backward(state, b, out)
            engine.step()  # instead of optimizer.step()
            sparcl.after_step(state, b, out)
            replay.observe(b.x, b.y, logits, task=task.id)
            state.step += 1
            state.task_progress = (epoch + (i + 1) / len(batches)) / epochs
        sparcl.on_epoch_end(state, task)
    sparcl.on_task_end(state, task)
    print(f"task {task.id + 1}: trained on {len(state.active_idx)} of {len(task.train_idx)} examples at the end, "
          f"density {engine.densities()['overall']:.4f}")

with torch.no_grad():
    accuracy = 100.0 * (model(x_test).argmax(1) == y_test).float().mean().item()
print(f"density {engine.densities()['overall']:.4f}")
print(f"Class-IL accuracy after 5 tasks {accuracy:.2f}")
