"""Per-module schedules: residual scale beta and stochastic-path drop rate."""

import numbers


def residual_scales(value, num_modules):
    """beta for each module, bottom to top.

    Args:
        value: a float (constant, e.g. the paper's 0.3); a linear schedule
            {"start": s, "end": e[, "decimals": d]} from the bottom module to
            the top one (the released network: 1.0 -> 0.7, 6 decimals); or a
            list with one value per module.
        num_modules: number of PolyInception modules.

    Returns:
        A list of `num_modules` floats.

    Raises:
        ValueError: a malformed value.
    """
    scales = _per_module(value, num_modules, "residual_scale")
    for k, beta in enumerate(scales):
        if not beta > 0:
            raise ValueError(
                f"`residual_scale` must be positive; module {k} gets {beta}."
            )
    return scales


def drop_path_rates(value, num_modules):
    """Stochastic-path drop probability for each module, bottom to top.

    Args:
        value: a float r, the linear schedule of the paper (section 4) rising
            from 0 at the bottom module to r at the top; a schedule
            {"start", "end"}; or a list with one value per module.
        num_modules: number of PolyInception modules.

    Returns:
        A list of `num_modules` floats in [0, 1).

    Raises:
        ValueError: a malformed value or a rate outside [0, 1).
    """
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = {"start": 0.0, "end": float(value)}
    rates = _per_module(value, num_modules, "drop_path_rate")
    for k, rate in enumerate(rates):
        if not 0.0 <= rate < 1.0:
            raise ValueError(
                f"`drop_path_rate` must be in [0, 1); module {k} gets {rate}."
            )
    return rates


def _per_module(value, num_modules, name):
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return [float(value)] * num_modules
    if isinstance(value, dict):
        unknown = set(value) - {"start", "end", "decimals"}
        if unknown or not {"start", "end"} <= set(value):
            raise ValueError(
                f"A `{name}` schedule needs keys 'start' and 'end' (and optionally "
                f"'decimals'). Received: {value}"
            )
        start, end = float(value["start"]), float(value["end"])
        steps = max(num_modules - 1, 1)
        values = [start + (end - start) * k / steps for k in range(num_modules)]
        if value.get("decimals") is not None:
            values = [round(v, int(value["decimals"])) for v in values]
        return values
    if isinstance(value, (list, tuple)):
        if len(value) != num_modules:
            raise ValueError(
                f"`{name}` as a list needs one value per module ({num_modules}). "
                f"Received {len(value)} values."
            )
        return [float(v) for v in value]
    raise ValueError(
        f"`{name}` must be a float, a {{'start', 'end'}} schedule or a list of "
        f"{num_modules} floats. Received: {value!r}"
    )
