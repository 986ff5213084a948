"""Scenario families, registered in a fixed order (the order of `sim.scenarios.FAMILIES`)."""
from sim.scenarios.families.crossing import VRUCrossing
from sim.scenarios.families.junctions import ProtectedTurn, RedLight, StopSign, UnprotectedLeft
from sim.scenarios.families.lane_change import ConstructionZone, LaneChange
from sim.scenarios.families.leads import CutIn, LeadBraking, StopAndGo
from sim.scenarios.families.obstacles import NarrowOncoming, ParkedObstacle
from sim.scenarios.families.road_following import Curve, LaneFollow

FAMILY_CLASSES = {
    cls.name: cls
    for cls in (
        LaneFollow,
        Curve,
        LeadBraking,
        CutIn,
        StopAndGo,
        LaneChange,
        ConstructionZone,
        ParkedObstacle,
        NarrowOncoming,
        VRUCrossing,
        StopSign,
        RedLight,
        ProtectedTurn,
        UnprotectedLeft,
    )
}
