"""The move pairing rules, on path names alone."""

from __future__ import annotations

from imgwatch.daemon.moves import at_or_below, missed_moves_together, moved_along, moves_not_covered


def test_a_gone_file_follows_a_new_one_of_the_same_name_so_they_share_a_job() -> None:
    changed = ["/p/2024/a.jpg", "/p/2024/b.jpg", "/p/new.jpg"]
    gone = ["/p/old/a.jpg", "/p/old/c.jpg", "/p/older/a.jpg"]
    assert missed_moves_together(changed, gone) == [
        "/p/2024/a.jpg", "/p/old/a.jpg",  # paired, the first gone one of that name first
        "/p/2024/b.jpg", "/p/new.jpg",  # no partner
        "/p/old/c.jpg", "/p/older/a.jpg",  # gone, unpaired, in their order
    ]
    assert missed_moves_together([], []) == []


def test_a_files_move_that_its_folders_move_covers_is_dropped() -> None:
    moves = [("/p/album/one.jpg", "/p/2024/album/one.jpg"),  # the polling observer: each file, then the folder
             ("/p/album/sub/two.jpg", "/p/2024/album/sub/two.jpg"),
             ("/p/album", "/p/2024/album"),
             ("/p/album/three.jpg", "/p/elsewhere/three.jpg"),  # moved on its own, not along
             ("/p/loose.jpg", "/p/2024/loose.jpg")]
    assert moves_not_covered(moves) == [("/p/album", "/p/2024/album"), ("/p/album/three.jpg", "/p/elsewhere/three.jpg"),
                                        ("/p/loose.jpg", "/p/2024/loose.jpg")]


def test_moved_along_means_the_same_place_inside_the_moved_folder() -> None:
    assert moved_along("/p/a/x.jpg", "/p/b/x.jpg", "/p/a", "/p/b")
    assert moved_along("/p/a/s/x.jpg", "/p/b/s/x.jpg", "/p/a/", "/p/b/")
    assert not moved_along("/p/a/x.jpg", "/p/b/y.jpg", "/p/a", "/p/b")
    assert not moved_along("/p/ab/x.jpg", "/p/b/x.jpg", "/p/a", "/p/b")  # a sibling sharing the prefix


def test_at_or_below_a_folder() -> None:
    assert at_or_below("/p/a/x.jpg", {"/p/a"}) and at_or_below("/p/a", {"/p/a"})
    assert not at_or_below("/p/ab/x.jpg", {"/p/a"}) and not at_or_below("/p/x.jpg", set())
