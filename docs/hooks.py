"""MkDocs hook: the site also renders the notebooks (notebooks/*.ipynb) and gin/README.md, which live
beside the code they describe rather than under docs/ (same paths on the site as in the repository)."""
import os

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_EXTRA = ('notebooks/inspect_tasks.ipynb', 'notebooks/finetune_and_evaluate.ipynb', 'gin/README.md')


@event_priority(100)  # before mkdocs-jupyter, which renders the .ipynb files it finds
def on_files(files, config):
  for path in _EXTRA:
    files.append(File(path, src_dir=_ROOT, dest_dir=config['site_dir'],
                      use_directory_urls=config['use_directory_urls']))
  return files


def on_page_markdown(markdown, page, config, files):
  """gin/README.md links to the guides as `../docs/<page>`; on the site they sit at the top."""
  if page.file.src_uri == 'gin/README.md':
    return markdown.replace('](../docs/', '](../')
  return markdown
