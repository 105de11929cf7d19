"""The torch side of flan-t5x: every use of torch / transformers runs here, in a child process.

  python -m flan_t5x.hf_peer <command> <request.json>

torch's triton crashes (SIGSEGV) when transformers imports it into a process that already loaded JAX
and TensorFlow, so the engine never imports torch: it starts this module with
`flan_t5x.hf_peer_client.call`, which writes the request, and reads arrays back from .npz /
safetensors files plus a JSON response. This module imports only the standard library, numpy,
safetensors, torch and transformers (torch/transformers lazily, inside commands) and of flan_t5x only
host_memory (standard library only): each response lists the JAX/TensorFlow modules the process holds, and the client
refuses a non-empty list.

Request keys every command understands: `response_path` (where the JSON response goes),
`inputs_npz` (arrays in), `outputs_npz` (arrays out), `num_threads` (torch intra-op threads),
`keep_freed_host_memory` (the glibc settings of host_memory.py, set before torch is imported; the
response says whether they took effect).
Exit codes: 0 ok, 1 error (traceback on stderr), 3 torch/transformers not installed.
"""
from __future__ import annotations

import importlib
import json
import os
import resource
import sys
import time
import traceback

import numpy as np

from flan_t5x import host_memory

FORBIDDEN_ROOTS = frozenset({'jax', 'jaxlib', 'tensorflow', 'flax', 'seqio', 'optax', 'orbax'})
EXIT_UNAVAILABLE = 3


class Unavailable(Exception):
  """torch or transformers is not importable in this interpreter."""


def _set_child_environment() -> None:
  """Only in the child (main), never on import: the parent imports this module for its constants."""
  # transformers < 5 may import TensorFlow / Flax when they are installed; this process must not.
  for key in ('USE_TF', 'USE_FLAX', 'USE_JAX'):
    os.environ.setdefault(key, '0')
  os.environ.setdefault('USE_TORCH', '1')
  # Local directories only: never wait on the model hub.
  os.environ.setdefault('HF_HUB_OFFLINE', '1')
  os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')


def peak_rss_mib() -> float:
  """This process's resident-set high-water mark. VmHWM, not getrusage: Linux keeps ru_maxrss across
  exec, so a child started by a large parent would report the parent's peak as its own."""
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith('VmHWM:'):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def forbidden_modules() -> list[str]:
  return sorted(m for m in sys.modules if m.split('.')[0] in FORBIDDEN_ROOTS)


def _torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise Unavailable(f'torch is not installed in {sys.executable} ({e}); '
                      "pip install -e '.[bench]'") from None
  return torch


def _transformers():
  torch = _torch()
  try:
    import transformers  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise Unavailable(f'transformers is not installed in {sys.executable} ({e}); '
                      "pip install -e '.[bench]'") from None
  return torch, transformers


def _peft():
  try:
    import peft  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise Unavailable(f'peft is not installed in {sys.executable} ({e}); '
                      "pip install -e '.[bench]'") from None
  return peft


def _versions(torch, transformers=None, peft=None) -> dict:
  out = {'torch': torch.__version__}
  if transformers is not None:
    out['transformers'] = transformers.__version__
  if peft is not None:
    out['peft'] = peft.__version__
  return out


def _inputs(request: dict) -> dict[str, np.ndarray]:
  path = request.get('inputs_npz')
  if not path:
    return {}
  with np.load(path) as data:
    return {k: data[k] for k in data.files}


def _save_outputs(request: dict, arrays: dict[str, np.ndarray]) -> None:
  if arrays:
    if not request.get('outputs_npz'):
      raise ValueError('request: outputs_npz is required by this command')
    np.savez(request['outputs_npz'], **arrays)


def _load_model(transformers, model_dir: str):
  if not os.path.isfile(os.path.join(model_dir, 'config.json')):
    raise FileNotFoundError(f'{model_dir}: no config.json (model_dir must be a local HF directory)')
  # .float(), not a dtype argument: its name changed (torch_dtype -> dtype) across transformers versions.
  return transformers.T5ForConditionalGeneration.from_pretrained(model_dir).float().eval()


# -- commands ----------------------------------------------------------------------------------------
def cmd_probe(request: dict) -> dict:
  """Imports what the other commands import (when installed) and reports versions.

  `extra_imports`: modules to import besides, so a test can show the guard catches a JAX import.
  """
  for name in request.get('extra_imports', []):
    importlib.import_module(name)
  import safetensors.numpy  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  try:
    torch, transformers = _transformers()
  except Unavailable as e:
    return {'torch_available': False, 'reason': str(e)}
  _ = transformers.T5ForConditionalGeneration  # the lazy import that reaches triton
  return {'torch_available': True, **_versions(torch, transformers)}


def cmd_read_bin(request: dict) -> dict:
  """pytorch_model.bin at `path` -> safetensors at `out` (bfloat16 widened to float32)."""
  torch = _torch()
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  state = torch.load(request['path'], map_location='cpu', weights_only=True)
  if not isinstance(state, dict):
    raise ValueError(f"{request['path']}: expected a state dict, got {type(state).__name__}")
  arrays = {}
  for name, tensor in state.items():
    if not isinstance(tensor, torch.Tensor):
      raise ValueError(f"{request['path']}: entry {name!r} is a {type(tensor).__name__}, not a tensor")
    tensor = tensor.float() if tensor.dtype == torch.bfloat16 else tensor
    arrays[name] = np.ascontiguousarray(tensor.numpy())
  save_file(arrays, request['out'])
  return {'tensors': len(arrays), **_versions(torch)}


def cmd_write_bin(request: dict) -> dict:
  """safetensors at `safetensors` -> pytorch_model.bin at `out` with torch.save (`dtype` optional)."""
  torch = _torch()
  from safetensors.torch import load_file  # pylint: disable=g-import-not-at-top
  state = load_file(request['safetensors'])
  if request.get('dtype'):
    state = {k: v.to(getattr(torch, request['dtype'])) for k, v in state.items()}
  torch.save(state, request['out'])
  return {'tensors': len(state), **_versions(torch)}


def cmd_forward(request: dict) -> dict:
  """Logits for (encoder_input_tokens, decoder_input_tokens) and/or `greedy_tokens` greedy tokens.

  Inputs: encoder_input_tokens [B, L] (0 = padding), optional decoder_input_tokens [B, T].
  Outputs: logits [B, T, V] float32; greedy_tokens [B, N] (no EOS stop, start token dropped).
  """
  torch, transformers = _transformers()
  arrays = _inputs(request)
  model = _load_model(transformers, request['model_dir'])
  _save_outputs(request, _logits_and_greedy(torch, model, arrays, int(request.get('greedy_tokens', 0))))
  return _versions(torch, transformers)


def _logits_and_greedy(torch, model, arrays: dict, greedy_tokens: int) -> dict:
  encoder = torch.as_tensor(arrays['encoder_input_tokens'], dtype=torch.long)
  mask = (encoder > 0).long()
  out = {}
  with torch.no_grad():
    if 'decoder_input_tokens' in arrays:
      out['logits'] = model(
          input_ids=encoder, attention_mask=mask,
          decoder_input_ids=torch.as_tensor(arrays['decoder_input_tokens'], dtype=torch.long)
      ).logits.float().numpy()
    if greedy_tokens:
      generated = model.generate(input_ids=encoder, attention_mask=mask, do_sample=False, num_beams=1,
                                 max_new_tokens=greedy_tokens, min_new_tokens=greedy_tokens)
      out['greedy_tokens'] = generated.numpy()[:, 1:].astype(np.int32)
  return out


def cmd_peft_forward(request: dict) -> dict:
  """`forward` of base `model_dir` + the peft adapter in `adapter_dir` (PeftModel.from_pretrained)."""
  torch, transformers = _transformers()
  peft = _peft()
  arrays = _inputs(request)
  model = peft.PeftModel.from_pretrained(_load_model(transformers, request['model_dir']),
                                         request['adapter_dir']).eval()
  out = _logits_and_greedy(torch, model, arrays, int(request.get('greedy_tokens', 0)))
  _save_outputs(request, out)
  lora_params = sum(p.numel() for n, p in model.named_parameters() if 'lora_' in n)
  return {'lora_parameters': int(lora_params), **_versions(torch, transformers, peft)}


def cmd_peft_make_adapter(request: dict) -> dict:
  """A peft LoRA adapter on `model_dir` (`lora`: LoraConfig kwargs), lora_B drawn N(0, `b_std`)
  with `seed` (peft starts it at zero), saved to `out_dir`; plus its logits / greedy tokens."""
  torch, transformers = _transformers()
  peft = _peft()
  arrays = _inputs(request)
  torch.manual_seed(int(request.get('seed', 0)))
  config = peft.LoraConfig(task_type='SEQ_2_SEQ_LM', **request['lora'])
  model = peft.get_peft_model(_load_model(transformers, request['model_dir']), config).eval()
  with torch.no_grad():
    for name, param in model.named_parameters():
      if 'lora_B' in name:
        param.normal_(0.0, float(request.get('b_std', 0.05)))
  model.save_pretrained(request['out_dir'])
  out = _logits_and_greedy(torch, model, arrays, int(request.get('greedy_tokens', 0)))
  _save_outputs(request, out)
  return {'files': sorted(os.listdir(request['out_dir'])), **_versions(torch, transformers, peft)}


def _fresh_t5(torch, transformers, config_kwargs: dict):
  """A randomly initialized T5ForConditionalGeneration of `config_kwargs`, with its own lm_head when
  `tie_word_embeddings` is False (T5.1.1 / Flan-T5). transformers 5 ties lm_head to the shared
  embedding in every fresh T5 and reads `tie_word_embeddings=False` only as "do not rescale": left
  alone, a T5.1.1 peer would train 16M fewer parameters (flan_t5_small) than the model it stands for."""
  model = transformers.T5ForConditionalGeneration(transformers.T5Config(**config_kwargs))
  if config_kwargs.get('tie_word_embeddings') is False and (
      model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr()):
    head = torch.empty_like(model.shared.weight)
    torch.nn.init.normal_(head, std=float(config_kwargs.get('initializer_factor', 1.0)))  # HF's lm_head init
    model.lm_head.weight = torch.nn.Parameter(head)
  return model


def cmd_peft_train_timing(request: dict) -> dict:
  """`train-timing` with peft LoRA (`lora`: LoraConfig kwargs) on a fresh `config` T5: median step
  time, trainable parameters and the process's peak RSS."""
  torch, transformers = _transformers()
  peft = _peft()
  arrays = _inputs(request)
  torch.manual_seed(int(request.get('seed', 0)))
  base = _fresh_t5(torch, transformers, request['config'])
  model = peft.get_peft_model(base, peft.LoraConfig(task_type='SEQ_2_SEQ_LM', **request['lora']))
  model.train()
  trainable = [p for p in model.parameters() if p.requires_grad]
  optimizer = torch.optim.AdamW(trainable, lr=float(request.get('lr', 1e-3)))
  return {**_timed_train_steps(torch, model, optimizer, arrays, int(request['steps'])),
          'trainable_params': int(sum(p.numel() for p in trainable)),
          'params': int(sum(p.numel() for p in model.parameters())),
          'num_threads': torch.get_num_threads(), **_versions(torch, transformers, peft)}


def _timed_train_steps(torch, model, optimizer, arrays: dict, steps: int) -> dict:
  """Trains `steps` + 1 steps on one fixed batch; times all but the first (the warm-up)."""
  args = dict(input_ids=torch.as_tensor(arrays['encoder_input_tokens'], dtype=torch.long),
              decoder_input_ids=torch.as_tensor(arrays['decoder_input_tokens'], dtype=torch.long),
              labels=torch.as_tensor(arrays['decoder_target_tokens'], dtype=torch.long))
  times, loss, cpu_s = [], None, 0.0
  for i in range(steps + 1):
    tick, cpu_tick = time.perf_counter(), time.process_time()
    loss = model(**args).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    if i:
      times.append(time.perf_counter() - tick)
      cpu_s += time.process_time() - cpu_tick
  # Cores busy: CPU seconds of all this process's threads per wall second over the timed steps.
  return {'step_times_s': times, 'step_time_s': float(np.median(times)), 'loss': float(loss),
          'cores_busy': cpu_s / sum(times)}


def cmd_train_timing(request: dict) -> dict:
  """Median step time of T5ForConditionalGeneration + torch AdamW on a fixed batch.

  `config`: transformers.T5Config keyword arguments; inputs: encoder_input_tokens,
  decoder_input_tokens, decoder_target_tokens; `steps` timed after one warm-up step; `lr`.
  """
  torch, transformers = _transformers()
  arrays = _inputs(request)
  torch.manual_seed(int(request.get('seed', 0)))
  model = _fresh_t5(torch, transformers, request['config'])
  model.train()
  optimizer = torch.optim.AdamW(model.parameters(), lr=float(request.get('lr', 1e-3)))
  return {**_timed_train_steps(torch, model, optimizer, arrays, int(request['steps'])),
          'params': int(sum(p.numel() for p in model.parameters())),
          'num_threads': torch.get_num_threads(), **_versions(torch, transformers)}


def cmd_matmul_peak(request: dict) -> dict:
  """torch's best fp32 `size` x `size` matmul rate (FLOP/s): the peer's side of a machine record."""
  torch = _torch()
  size, repeats = int(request.get('size', 2048)), int(request.get('repeats', 10))
  a = torch.ones((size, size), dtype=torch.float32)
  torch.matmul(a, a)
  best = float('inf')
  for _ in range(repeats):
    tick = time.perf_counter()
    torch.matmul(a, a)
    best = min(best, time.perf_counter() - tick)
  return {'matmul_peak_flops': 2 * size ** 3 / best, 'num_threads': torch.get_num_threads(),
          **_versions(torch)}


def cmd_generate_timing(request: dict) -> dict:
  """Best-of-`repeats` wall time of `generate` (after a warm-up call) for each case.

  `cases`: [{'inputs': <array name>, 'beams': int, 'new_tokens': int, 'repeats': int,
  'length_penalty': float}], min length = max length so every row generates `new_tokens` tokens.
  """
  torch, transformers = _transformers()
  arrays = _inputs(request)
  model = _load_model(transformers, request['model_dir'])
  results = []
  for case in request['cases']:
    inputs = torch.as_tensor(arrays[case['inputs']], dtype=torch.long)
    mask = (inputs > 0).long()
    beams, new_tokens = int(case['beams']), int(case['new_tokens'])

    def run():
      with torch.no_grad():
        return model.generate(input_ids=inputs, attention_mask=mask, max_new_tokens=new_tokens,  # pylint: disable=cell-var-from-loop
                              min_new_tokens=new_tokens, num_beams=beams, do_sample=False,  # pylint: disable=cell-var-from-loop
                              length_penalty=float(case.get('length_penalty', 1.0)),  # pylint: disable=cell-var-from-loop
                              early_stopping=False, use_cache=True)
    run()  # warm-up
    best = float('inf')
    for _ in range(int(case.get('repeats', 1))):
      tick = time.perf_counter()
      run()
      best = min(best, time.perf_counter() - tick)
    results.append({'seconds': best, 'tokens': int(inputs.shape[0]) * new_tokens})
  return {'results': results, 'num_threads': torch.get_num_threads(), **_versions(torch, transformers)}


def cmd_from_pretrained_timing(request: dict) -> dict:
  """Seconds `from_pretrained(model_dir)` takes (the torch/transformers import timed apart)."""
  tick = time.perf_counter()
  torch, transformers = _transformers()
  model_class = transformers.T5ForConditionalGeneration
  import_s = time.perf_counter() - tick
  tick = time.perf_counter()
  model = model_class.from_pretrained(request['model_dir'])
  seconds = time.perf_counter() - tick
  return {'seconds': seconds, 'import_s': import_s,
          'params': int(sum(p.numel() for p in model.parameters())), **_versions(torch, transformers)}


def cmd_train_to_quality(request: dict) -> dict:
  """Trains the exported model in `model_dir` for `budget_s` seconds of training time (evaluation
  excluded) with transformers' Adafactor, on the parent's batches in the parent's order.

  Inputs: train_{inputs,decoder_inputs,targets} (rows), `order` (row indices, batch after batch),
  val_{inputs,decoder_inputs,targets}. Request: lr, batch_size, budget_s, eval_every_s,
  decode_length, eval_batch_size, seed. Every `eval_every_s` training seconds (and at the end) the
  validation cross entropy per target token goes into `curve`; at the end the validation inputs are
  greedy-decoded (output `val_decoded`, decoder start token removed, 0-padded).
  """
  torch, transformers = _transformers()
  arrays = _inputs(request)
  torch.manual_seed(int(request.get('seed', 0)))
  model = _load_model(transformers, request['model_dir'])
  # T5X's Adafactor defaults: beta2 = 1 - t^-0.8, update clipping 1.0, lr scaled by the parameter RMS.
  optimizer = transformers.optimization.Adafactor(
      model.parameters(), lr=float(request['lr']), eps=(1e-30, 1e-3), clip_threshold=1.0,
      decay_rate=-0.8, beta1=None, weight_decay=0.0, scale_parameter=True, relative_step=False,
      warmup_init=False)
  tensor = lambda a: torch.as_tensor(a, dtype=torch.long)
  batch_size, order = int(request['batch_size']), arrays['order']

  def val_loss() -> float:
    model.eval()
    total, count = 0.0, 0
    eval_batch = int(request['eval_batch_size'])
    with torch.no_grad():
      for start in range(0, len(arrays['val_inputs']), eval_batch):
        rows = slice(start, start + eval_batch)
        inputs = tensor(arrays['val_inputs'][rows])
        targets = tensor(arrays['val_targets'][rows])
        logits = model(input_ids=inputs, attention_mask=(inputs > 0).long(),
                       decoder_input_ids=tensor(arrays['val_decoder_inputs'][rows])).logits
        total += float(torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.masked_fill(targets == 0, -100).reshape(-1),
            ignore_index=-100, reduction='sum'))
        count += int((targets > 0).sum())
    model.train()
    return total / max(count, 1)

  curve = [{'train_seconds': 0.0, 'step': 0, 'val_loss': val_loss()}]
  model.train()
  train_seconds, step, next_eval = 0.0, 0, float(request['eval_every_s'])
  while train_seconds < float(request['budget_s']) and (step + 1) * batch_size <= len(order):
    rows = order[step * batch_size:(step + 1) * batch_size]
    inputs, targets = tensor(arrays['train_inputs'][rows]), tensor(arrays['train_targets'][rows])
    tick = time.perf_counter()
    loss = model(input_ids=inputs, attention_mask=(inputs > 0).long(),
                 decoder_input_ids=tensor(arrays['train_decoder_inputs'][rows]),
                 labels=targets.masked_fill(targets == 0, -100)).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    train_seconds += time.perf_counter() - tick
    step += 1
    if train_seconds >= next_eval:
      curve.append({'train_seconds': train_seconds, 'step': step, 'val_loss': val_loss(),
                    'train_loss': float(loss)})
      print(f'hf_peer train-to-quality: step {step}, {train_seconds:.0f} s, val loss '
            f'{curve[-1]["val_loss"]:.3f}', file=sys.stderr, flush=True)
      next_eval += float(request['eval_every_s'])
  if curve[-1]['step'] != step:
    curve.append({'train_seconds': train_seconds, 'step': step, 'val_loss': val_loss()})
  model.eval()
  decode_length = int(request['decode_length'])
  decoded = np.zeros((len(arrays['val_inputs']), decode_length), np.int32)
  with torch.no_grad():
    for start in range(0, len(arrays['val_inputs']), int(request['eval_batch_size'])):
      inputs = tensor(arrays['val_inputs'][start:start + int(request['eval_batch_size'])])
      out = model.generate(input_ids=inputs, attention_mask=(inputs > 0).long(), max_new_tokens=decode_length,
                           num_beams=1, do_sample=False).numpy()[:, 1:]
      decoded[start:start + len(out), :out.shape[1]] = out
  _save_outputs(request, {'val_decoded': decoded})
  return {'curve': curve, 'steps': step, 'train_seconds': train_seconds,
          'num_threads': torch.get_num_threads(), **_versions(torch, transformers)}


COMMANDS = {
    'probe': cmd_probe,
    'read-bin': cmd_read_bin,
    'write-bin': cmd_write_bin,
    'forward': cmd_forward,
    'train-timing': cmd_train_timing,
    'generate-timing': cmd_generate_timing,
    'matmul-peak': cmd_matmul_peak,
    'from-pretrained-timing': cmd_from_pretrained_timing,
    'peft-forward': cmd_peft_forward,
    'peft-make-adapter': cmd_peft_make_adapter,
    'peft-train-timing': cmd_peft_train_timing,
    'train-to-quality': cmd_train_to_quality,
}


def main(argv: list[str]) -> int:
  if len(argv) != 2 or argv[0] not in COMMANDS:
    print(f'usage: python -m flan_t5x.hf_peer {{{",".join(COMMANDS)}}} <request.json>', file=sys.stderr)
    return 2
  command, request_path = argv
  _set_child_environment()
  with open(request_path) as f:
    request = json.load(f)
  # The same glibc settings as our engine's jobs (host_memory.py), for a peer measured on equal terms.
  kept_freed_memory = bool(request.get('keep_freed_host_memory')) and host_memory.keep_freed_memory()
  try:
    if request.get('num_threads'):
      _torch().set_num_threads(int(request['num_threads']))
    response = COMMANDS[command](request)
  except Unavailable as e:
    print(f'hf_peer {command}: {e}', file=sys.stderr)
    return EXIT_UNAVAILABLE
  except Exception:  # pylint: disable=broad-except
    traceback.print_exc()
    return 1
  response = {**response, 'forbidden_modules': forbidden_modules(), 'command': command,
              'peak_rss_mib': peak_rss_mib(), 'keep_freed_host_memory': kept_freed_memory}
  payload = json.dumps(response)
  if request.get('response_path'):
    with open(request['response_path'], 'w') as f:
      f.write(payload)
  else:
    print(payload)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
