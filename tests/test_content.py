import os

from clusterhub.content import sync_content


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def read(path):
    with open(path) as f:
        return f.read()


def test_one_way_merge_never_clobbers_a_users_edits(tmp_path):
    source, home, manifest = tmp_path / "repo", tmp_path / "home", tmp_path / "manifest.json"
    write(source / "a.ipynb", "a v1")
    write(source / "sub" / "b.ipynb", "b v1")
    write(source / "requirements.txt", "dask")  # environment spec, not content
    write(source / ".git" / "HEAD", "ref")

    first = sync_content(str(source), str(home), str(manifest))
    assert sorted(first.added) == ["a.ipynb", os.path.join("sub", "b.ipynb")]
    assert not os.path.exists(home / "requirements.txt")
    assert not os.path.exists(home / ".git")

    # The user edits a.ipynb and makes a file of their own; the workshop updates both notebooks.
    write(home / "a.ipynb", "a edited by the user")
    write(home / "mine.py", "user's own")
    write(source / "a.ipynb", "a v2")
    write(source / "sub" / "b.ipynb", "b v2")
    write(source / "c.ipynb", "c v1")

    second = sync_content(str(source), str(home), str(manifest))
    assert second.added == ["c.ipynb"]
    assert second.updated == [os.path.join("sub", "b.ipynb")]
    assert second.kept == ["a.ipynb"]
    assert read(home / "a.ipynb") == "a edited by the user"
    assert read(home / "a.workshop-update.ipynb") == "a v2"
    assert read(home / "sub" / "b.ipynb") == "b v2"
    assert read(home / "mine.py") == "user's own"

    # The workshop drops a file: nothing is deleted from the home.
    os.unlink(source / "c.ipynb")
    sync_content(str(source), str(home), str(manifest))
    assert read(home / "c.ipynb") == "c v1"


def test_a_deleted_file_comes_back_and_a_directory_in_the_way_is_left_alone(tmp_path):
    source, home, manifest = tmp_path / "repo", tmp_path / "home", tmp_path / "m.json"
    write(source / "a.ipynb", "a")
    write(source / "d", "file named d")
    os.makedirs(home / "d")
    report = sync_content(str(source), str(home), str(manifest))
    assert report.kept == ["d"] and os.path.isdir(home / "d")
    os.unlink(home / "a.ipynb")
    assert sync_content(str(source), str(home), str(manifest)).added == ["a.ipynb"]


def test_an_excluded_top_level_folder_is_not_content(tmp_path):
    """A repository's binder/ folder holds its environment, not workshop material; a folder
    of that name deeper down is content like any other."""
    source, home, manifest = tmp_path / "repo", tmp_path / "home", tmp_path / "m.json"
    write(source / "binder" / "requirements.txt", "dask")
    write(source / "binder" / "postBuild", "echo")
    write(source / "lesson" / "binder" / "notes.md", "deep")
    write(source / "a.ipynb", "a")
    report = sync_content(str(source), str(home), str(manifest), exclude=("binder",))
    assert sorted(report.added) == ["a.ipynb", os.path.join("lesson", "binder", "notes.md")]
    assert not os.path.exists(home / "binder")


def test_a_link_out_of_the_source_is_refused_and_one_inside_is_delivered(tmp_path):
    source, home, manifest = tmp_path / "repo", tmp_path / "home", tmp_path / "manifest.json"
    write(source / "a.ipynb", "a v1")
    write(tmp_path / "outside" / "private.txt", "not workshop content")
    os.symlink(tmp_path / "outside" / "private.txt", source / "notes.txt")
    os.symlink("/etc/shadow", source / "shadow")
    os.symlink("a.ipynb", source / "same.ipynb")  # inside the source: an ordinary file

    report = sync_content(str(source), str(home), str(manifest))

    assert sorted(report.refused) == [
        f"notes.txt -> {tmp_path / 'outside' / 'private.txt'}",
        "shadow -> /etc/shadow",
    ]
    assert not os.path.lexists(home / "notes.txt") and not os.path.lexists(home / "shadow")
    assert sorted(report.added) == ["a.ipynb", "same.ipynb"]
    assert read(home / "same.ipynb") == "a v1" and not os.path.islink(home / "same.ipynb")
