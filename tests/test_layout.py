"""Package layout: library modules never import a job, jobs never import each other, no import cycle."""
import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'flan_t5x'
# Command-line jobs (each has a `main`); everything else in flan_t5x is library.
JOBS = {'train', 'eval', 'infer', 'convert', 'compare', 'plan', 'main'}


def _imports() -> dict[str, set[str]]:
  """{module: flan_t5x modules it imports}, from the source (top-level and function-level imports)."""
  modules = {path.stem for path in PACKAGE.glob('*.py') if path.stem != '__init__'}
  graph = {}
  for name in modules:
    deps = set()
    for node in ast.walk(ast.parse((PACKAGE / f'{name}.py').read_text())):
      if isinstance(node, ast.ImportFrom) and node.module == 'flan_t5x':
        deps |= {alias.name for alias in node.names}
      elif isinstance(node, ast.ImportFrom) and (node.module or '').startswith('flan_t5x.'):
        deps.add(node.module.split('.')[1])
      elif isinstance(node, ast.Import):
        deps |= {alias.name.split('.')[1] for alias in node.names if alias.name.startswith('flan_t5x.')}
    graph[name] = (deps & modules) - {name}
  return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One import cycle as a path, or None (depth-first search with colours)."""
  state, stack = {}, []

  def visit(node):
    state[node] = 'open'
    stack.append(node)
    for dep in sorted(graph[node]):
      if state.get(dep) == 'open':
        return stack[stack.index(dep):] + [dep]
      if dep not in state and (found := visit(dep)):
        return found
    state[node] = 'done'
    stack.pop()
    return None

  for node in sorted(graph):
    if node not in state and (found := visit(node)):
      return found
  return None


def test_jobs_are_known_modules():
  graph = _imports()
  assert JOBS <= set(graph), JOBS - set(graph)
  for job in JOBS:
    assert 'def main(' in (PACKAGE / f'{job}.py').read_text(), job


def test_no_module_imports_a_job():
  graph = _imports()
  offenders = {module: sorted(deps & JOBS) for module, deps in graph.items() if deps & JOBS}
  assert not offenders, f'library modules and jobs must not import jobs: {offenders}'


def test_no_import_cycle():
  assert _cycle(_imports()) is None, ' -> '.join(_cycle(_imports()))


def test_cycle_finder_finds_a_cycle():
  assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
  assert _cycle({'a': {'b'}, 'b': set()}) is None
