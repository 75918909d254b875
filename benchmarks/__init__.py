"""eocube's benchmarks: one command, ``python -m benchmarks <name> [args...]``, run from the repository root.

``python -m benchmarks`` lists them; ``python -m benchmarks <name> --help`` gives a benchmark's options.
The current figures, each with its target, command, machine and date, are in ``benchmarks/RESULTS.md``;
superseded figures and experiments that were not kept are in ``docs/history/``.

* ``sensors-qa`` (:mod:`benchmarks.sensors_qa`): QA decoding and masking throughput, numpy and lazy dask.
* ``cube`` (:mod:`benchmarks.cube_bench`): masked cube streamed to Zarr against plain odc-stac / stackstac
  writes: wall time, peak RSS, task-graph size.
* ``embeddings`` (:mod:`benchmarks.embeddings`): encoder throughput, model only against end to end.
* ``embeddings-fuel-moisture`` (:mod:`benchmarks.embeddings_fuel_moisture`): Presto fuel-moisture RMSE
  against the paper's.
* ``uncertainty-fuel-moisture`` (:mod:`benchmarks.uncertainty_fuel_moisture`): MC-TD / MC-ConcTD against
  deterministic, MC-Dropout and ensemble on real fuel-moisture series.
* ``uncertainty-map-memory`` (:mod:`benchmarks.uncertainty_map_memory`): time and peak RSS of
  uncertainty maps against map size.
* ``compression-rd`` (:mod:`benchmarks.compression_rd`): rate-distortion tables and curve, with the
  re-created xarrayvideo recipe side by side.
* ``compression-settings`` (:mod:`benchmarks.compression_settings`): the measurements behind the codec's
  defaults (QP floor, ffv1 context, x265 preset, weak streams, KLT, rate control, mask/header bytes).
* ``compression-downstream`` (:mod:`benchmarks.compression_downstream`): embeddings and uncertainty maps
  from a compressed cube against the models' own spread.

Helpers that only the benchmarks use: :mod:`benchmarks.xarrayvideo_style` (the re-created xarrayvideo
lossy recipe) and :mod:`benchmarks.uncertainty_plots` (reliability diagram, σ against |error|).
The registry of names is ``BENCHMARKS`` in :mod:`benchmarks.__main__`.
"""
