"""M2I2 on the shared model and momentum checks (tests/common), plus what is special to M2I2."""

from tests.common.model_tester import ModelTesterMixin
from tests.common.momentum_tester import MomentumTesterMixin
from tests.models.m2i2.tester import M2I2ModelTester, M2I2MomentumTester

TESTER = M2I2ModelTester()


class TestM2I2Model(ModelTesterMixin):
    tester = TESTER


class TestM2I2Momentum(MomentumTesterMixin):
    momentum_tester = M2I2MomentumTester()
