#!/usr/bin/env python3
"""The seed notebook ("Distributions of model hidden-state activations"), cell for cell, run
headless: the peer of `strata report experiments/correlation.yaml` in benches/report.rs's
start-up case. The only changes: the model comes from a folder (argv[1]) instead of the
Hub, and each `plt.show()` writes the figure as SVG (the notebook's own inline format)
into a temporary folder instead of a notebook page.

usage: notebook.py MODEL_DIR   (needs torch, transformers, numpy, matplotlib, seaborn, pandas)
"""
import os
import sys
import tempfile

import matplotlib

matplotlib.use("Agg")

import numpy as np
import torch
import matplotlib.pyplot as plt
import matplotlib as mpl

# for pairplot
import seaborn as sns
import pandas as pd

OUT = tempfile.mkdtemp(prefix="strata-notebook-")
figures = 0


def show():
    """What the notebook's inline SVG backend does with a finished figure."""
    global figures
    plt.savefig(os.path.join(OUT, f"figure{figures}.svg"), format="svg")
    plt.close("all")
    figures += 1


from transformers import AutoModelForCausalLM, GPT2Tokenizer

# load pretrained GPT-2 model and tokenizer
gpt2 = AutoModelForCausalLM.from_pretrained(sys.argv[1])
gpt2.eval()

# and the tokenizer
tokenizer = GPT2Tokenizer.from_pretrained(sys.argv[1])

# the text
text = 'The goal of a correlation analysis is to compute a correlation coefficient. This coefficient is indicated using r, and is a number that encodes the normalized strength of the linear relationship between two variables. The normalization imposes boundaries of -1 to +1. Negative, zero, and positive correlation coefficients have distinct interpretations.'
tokens = tokenizer.encode(text, return_tensors='pt')

# get the outputs of the models
with torch.no_grad():
    outputs = gpt2(tokens, output_hidden_states=True)

print(f'There are {len(tokens[0])} tokens.')
print(f'There are {len(outputs.hidden_states)} "hidden states."')
print(f'And each hidden state has size {list(outputs.hidden_states[3].shape)}.')

# pick one layer to visualize
whichLayer = 3
y = outputs.hidden_states[whichLayer][0, 1:, :].detach()
_, axs = plt.subplots(1, 2, figsize=(12, 4))
axs[0].plot(y.T, 'o', alpha=.4)
axs[0].set(xlabel='Embedding dimension', ylabel='Activation', title='Each color is a token')
axs[1].plot(y, 'o', alpha=.4)
axs[1].set(xlabel='Token index', ylabel='Activation', title='Each color is an embedding dimension')
plt.suptitle(f'Output activations from attention layer {whichLayer}', fontweight='bold')
plt.tight_layout()
show()

# number of points, excluding the first token
npnts = (len(tokens[0]) - 1) * gpt2.config.n_embd
allDataMat = np.zeros((len(outputs.hidden_states), npnts))
for layeri in range(len(outputs.hidden_states)):
    vectActs = outputs.hidden_states[layeri][0, 1:, :].detach().flatten().numpy()
    allDataMat[layeri, :] = vectActs

covmat = np.cov(allDataMat)
cormat = np.corrcoef(allDataMat)**2
layerlabels = ['emb' if i == 0 else f'h.{i-1}' for i in range(13)]
_, axs = plt.subplots(1, 2, figsize=(10, 5))
h = axs[0].imshow(covmat, vmin=-10, vmax=10, origin='lower')
axs[0].set(xlabel='Layer', ylabel='Layer', title='Covariance matrix',
           xticks=range(0, len(layerlabels), 2), xticklabels=layerlabels[::2],
           yticks=range(1, len(layerlabels), 2), yticklabels=layerlabels[1::2])
plt.colorbar(h, ax=axs[0], pad=.04, fraction=.046)
h = axs[1].imshow(100*cormat, vmin=0, vmax=100, origin='lower')
axs[1].set(xlabel='Layer', ylabel='Layer', title=r'R$^2$ matrix (% shared variance)',
           xticks=range(0, len(layerlabels), 2), xticklabels=layerlabels[::2],
           yticks=range(1, len(layerlabels), 2), yticklabels=layerlabels[1::2])
plt.colorbar(h, ax=axs[1], pad=.04, fraction=.046)
plt.tight_layout()
show()

# pairplots are great but not really scalable to many variables
numpnts = 1000
numlayers = 4
df = pd.DataFrame(allDataMat[:numlayers, :numpnts].T)
sns.pairplot(df)
show()

binbounds = np.linspace(-15, 15, 301)
_, axs = plt.subplots(1, 2, figsize=(12, 4))
linecolors = mpl.cm.plasma_r(np.linspace(0, 1, len(outputs.hidden_states)))
for layeri in range(len(outputs.hidden_states)):
    y, _ = np.histogram(allDataMat[layeri, :], bins=binbounds)
    axs[0].plot(binbounds[:-1], y, color=linecolors[layeri], label=layerlabels[layeri])
    axs[1].plot(binbounds[:-1], np.log(y+1e-14), color=linecolors[layeri], label=layerlabels[layeri])
for a in axs:
    a.legend(fontsize=8)
    a.set(xlim=binbounds[[0, -1]], ylim=[0, None], xlabel='Activation value', ylabel='Count')
axs[0].set_title('Linear counts')
axs[1].set_title('Log counts')
show()
