"""Dynamic speaker-mix track for `python inference_main.py ... -usm`: edit the map below (4.1's format).

    spk_mix_map = {speaker_id: [[t_start, t_end, v_start, v_end], [t_start, t_end, v_start, v_end], ...]}

* speaker_id: integer id from the model's config.json "spk" map. List every id of the model
  (0 .. number of speakers - 1); an unused speaker is [[0., 1., 0., 0.]].
* t_start / t_end: segment bounds as a fraction of the whole output (0..1). The first segment starts
  at 0, the last ends at 1, and each starts where the previous ended.
* v_start / v_end: mix value (>= 0) at the segment's ends, linear in between. At every frame the values
  of all speakers are scaled to sum to 1 (a frame where all are 0 gets equal shares).

With a one-entry map, -usm is ignored and the -s speakers are used. `python spkmix.py` checks the map's
structure; the speaker count is checked against the model when converting.
"""

spk_mix_map = {
    0: [[0., 0.5, 1, 0.5], [0.5, 1, 0.5, 1]],
    1: [[0., 0.35, 1, 0.5], [0.35, 0.75, 0.75, 1], [0.75, 1, 0.45, 1]],
    2: [[0., 0.35, 1, 0.5], [0.35, 0.75, 0.75, 1], [0.75, 1, 0.45, 1]],
}

if __name__ == "__main__":
    from inference.speaker_mix import validate_spk_mix_map

    checked = validate_spk_mix_map(spk_mix_map)
    print(f"spk_mix_map OK: {len(checked)} speaker tracks ({', '.join(map(str, checked))})")
