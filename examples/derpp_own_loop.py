"""DER++ in your own loop: five digit tasks of two classes each, learned one after the other (Class-IL).

sparsecl gives the buffer (reservoir sampling) and the replay term; the loop, model and data are yours.
The same loop without replay forgets the earlier tasks; both accuracies are printed.
Run: python examples/derpp_own_loop.py
"""

import torch
import torch.nn.functional as F
from torch import nn

import sparsecl

data = sparsecl.load_dataset("digits")
x_train, y_train = data.x_train.flatten(1).float() / 255, data.y_train
x_test, y_test = data.x_test.flatten(1).float() / 255, data.y_test
tasks = [(2 * t, 2 * t + 1) for t in range(5)]


def run(replay_on: bool) -> float:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(0)
    buffer = sparsecl.Buffer(200, (64,), 10, device="cpu", generator=torch.Generator().manual_seed(1),
                             store_logits=True, dtype=torch.float32)
    replay = sparsecl.DERppReplay(buffer, alpha=0.3, beta=0.5, generator=g)
    for t, classes in enumerate(tasks):
        mine = ((y_train == classes[0]) | (y_train == classes[1])).nonzero().flatten()
        for _ in range(5):
            for idx in mine[torch.randperm(len(mine), generator=g)].split(32):
                optimizer.zero_grad()
                logits = model(x_train[idx])
                loss = F.cross_entropy(logits, y_train[idx])
                if replay_on:
                    loss = loss + replay.loss(model, len(idx))  # 0 while the buffer is empty
                loss.backward()
                optimizer.step()
                if replay_on:
                    replay.observe(x_train[idx], y_train[idx], logits, task=t)
    with torch.no_grad():
        return 100.0 * (model(x_test).argmax(1) == y_test).float().mean().item()


print(f"buffer 200, DER++: Class-IL accuracy after 5 tasks {run(True):.2f}")
print(f"no replay:         Class-IL accuracy after 5 tasks {run(False):.2f}")
